"""DKIM keys of a domain: creation, selectors, rotation, deletion, on the memory and LMDB
data stores; a dkimpy signature made with each stored key verifies against its TXT record."""
from __future__ import annotations

import asyncio
import base64
import calendar

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from stalwart_mp.directory.base import DirectoryError
from stalwart_mp.directory.dkim_keys import (
    TAG_DKIM,
    create_keys,
    delete_keys,
    domain_keys,
    rotate_keys,
)
from stalwart_mp.directory.secret import server_secret
from stalwart_mp.store.registry import open_data_store

NOV_2026 = calendar.timegm((2026, 11, 15, 12, 0, 0))
DEC_2026 = calendar.timegm((2026, 12, 1, 0, 0, 0))

MESSAGE = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\n"
           b"Subject: hello\r\nDate: Sun, 15 Nov 2026 12:00:00 +0000\r\n"
           b"Message-ID: <1@example.org>\r\n\r\nHi Bob.\r\n")


@pytest.fixture(params=["memory", "lmdb"])
async def data(request, tmp_path):
    settings = {"type": "memory"} if request.param == "memory" else {
        "type": "lmdb", "path": str(tmp_path / "lmdb")}
    store = open_data_store("data", settings)
    yield store
    await store.close()


async def test_create_one_ed25519_and_one_rsa_2048(data):
    keys = await create_keys(data, "Example.ORG.", now=NOV_2026)
    assert [(k.domain, k.selector, k.algorithm) for k in keys] == [
        ("example.org", "202611e", "ed25519-sha256"), ("example.org", "202611r", "rsa-sha256")]
    ed, rs = (serialization.load_pem_private_key(k.private_pem, None) for k in keys)
    assert isinstance(ed, ed25519.Ed25519PrivateKey)
    assert isinstance(rs, rsa.RSAPrivateKey) and rs.key_size == 2048
    assert all(k.private_pem.startswith(b"-----BEGIN PRIVATE KEY-----") for k in keys)
    assert all(k.created_at == NOV_2026 for k in keys)
    assert await domain_keys(data, "example.org") == keys


async def test_txt_records_carry_the_public_keys(data):
    ed, rs = await create_keys(data, "example.org", now=NOV_2026)
    ed_pub = serialization.load_pem_private_key(ed.private_pem, None).public_key()
    raw = ed_pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert ed.txt_record() == f"v=DKIM1; k=ed25519; h=sha256; p={base64.b64encode(raw).decode()}"
    assert len(raw) == 32
    rs_pub = serialization.load_pem_private_key(rs.private_pem, None).public_key()
    der = base64.b64decode(rs.public_key_b64())
    assert serialization.load_der_public_key(der).public_numbers() == rs_pub.public_numbers()
    assert rs.txt_record().startswith("v=DKIM1; k=rsa; h=sha256; p=MII")
    assert ed.dns_name == "202611e._domainkey.example.org"


async def test_dkimpy_signature_verifies_against_the_published_key(data):
    keys = await create_keys(data, "example.org", now=NOV_2026)
    published = {k.dns_name.encode() + b".": k.txt_record().encode() for k in keys}

    def dnsfunc(name, timeout=5):
        return published.get(name if name.endswith(b".") else name + b".")

    for key in await domain_keys(data, "example.org"):
        header = dkim.sign(MESSAGE, key.selector.encode(), b"example.org",
                           key.dkimpy_private_key(),
                           signature_algorithm=key.algorithm.encode(),
                           include_headers=[b"from", b"to", b"subject"])
        assert f"a={key.algorithm}".encode() in header
        assert dkim.verify(header + MESSAGE, dnsfunc=dnsfunc), key.algorithm
        assert not dkim.verify(header + MESSAGE.replace(b"Hi", b"Yo"), dnsfunc=dnsfunc)


async def test_create_twice_refused_and_domains_kept_apart(data):
    await create_keys(data, "example.org", now=NOV_2026)
    with pytest.raises(DirectoryError, match="already has DKIM keys"):
        await create_keys(data, "example.org", now=NOV_2026)
    # a domain whose name is a prefix of another's does not see its keys
    assert await domain_keys(data, "example.or") == []
    other = await create_keys(data, "example.org.uk", now=NOV_2026)
    assert await domain_keys(data, "example.org.uk") == other
    assert len(await domain_keys(data, "example.org")) == 2
    with pytest.raises(DirectoryError, match="not a domain name"):
        await create_keys(data, "localhost")


async def test_rotation_gets_fresh_selectors_within_a_month(data):
    first = await create_keys(data, "example.org", now=NOV_2026)
    second = await rotate_keys(data, "example.org", now=NOV_2026 + 60)
    third = await rotate_keys(data, "example.org", now=NOV_2026 + 120)
    assert [k.selector for k in second] == ["202611e2", "202611r2"]
    assert [k.selector for k in third] == ["202611e3", "202611r3"]
    assert await domain_keys(data, "example.org") == third, "old keys are replaced"
    assert {k.private_pem for k in first} & {k.private_pem for k in third} == set()
    fourth = await rotate_keys(data, "example.org", now=DEC_2026)
    assert [k.selector for k in fourth] == ["202612e", "202612r"]


async def test_concurrent_rotations_leave_exactly_two_keys(data):
    await create_keys(data, "example.org", now=NOV_2026)
    await asyncio.gather(*(rotate_keys(data, "example.org", now=NOV_2026) for _ in range(3)))
    keys = await domain_keys(data, "example.org")
    assert [k.algorithm for k in keys] == ["ed25519-sha256", "rsa-sha256"]


async def test_delete_leaves_other_domains_and_the_server_secret(data):
    secret = await server_secret(data)
    await create_keys(data, "example.org", now=NOV_2026)
    kept = await create_keys(data, "example.net", now=NOV_2026)
    await delete_keys(data, "example.org")
    await delete_keys(data, "example.org")  # deleting nothing is fine
    assert await domain_keys(data, "example.org") == []
    assert await domain_keys(data, "example.net") == kept
    assert await server_secret(data) == secret
    rows = await data.range(bytes([TAG_DKIM]), bytes([TAG_DKIM + 1]), keys_only=True)
    assert sorted(k for k, _ in rows) == sorted(
        [bytes([TAG_DKIM]) + b"example.net\x00202611e",
         bytes([TAG_DKIM]) + b"example.net\x00202611r"]), "only the keys in their subspace"


async def test_keys_survive_reopening_lmdb(tmp_path):
    settings = {"type": "lmdb", "path": str(tmp_path / "lmdb")}
    store = open_data_store("data", settings)
    made = await create_keys(store, "example.org")
    await store.close()
    store = open_data_store("data", settings)
    assert await domain_keys(store, "example.org") == made
    await store.close()
