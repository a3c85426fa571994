"""``stalwart-mp store copy``: the real command, run as an operator runs it, between real
stores (LMDB, SQLite, PostgreSQL): copy, verification, interruption and resume, refusals."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stalwart_mp import cli
from stalwart_mp.store.copy import Checkpoint
from stalwart_mp.store.data import WriteBatch
from stalwart_mp.store.registry import open_data_store
from stalwart_mp.store.verify import CHECKPOINT_KEY, KEY_END, describe_key
from tests.stores import backends

CLI = Path(sys.executable).with_name("stalwart-mp")
MIB = 1024 * 1024


def toml_value(value: Any) -> str:
    return json.dumps(value)  # strings and integers: JSON and TOML agree


def write_config(folder: Path, stores: dict[str, dict[str, Any]]) -> Path:
    """A valid config.toml defining ``stores`` (the first serves as the data store)."""
    lines = [
        "[server]",
        'hostname = "mail.example.com"',
        "[storage]",
        f"data = {toml_value(next(iter(stores)))}",
        'fts = "search"',
        '[store."search"]',
        'type = "sqlite"',
        'path = "search.db"',
    ]
    for name, settings in stores.items():
        lines.append(f"[store.{toml_value(name)}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def sample_data(small: int) -> list[tuple[bytes, bytes]]:
    """Sorted pairs over several subspaces: counters, names, records, large values, edges."""
    rng = random.Random(11)
    pairs = {b"\x01seq%d" % i: (i * 7).to_bytes(8, "big") for i in range(5)}
    for i in range(small):
        pairs[b"\x10user%05d@example.com" % i] = i.to_bytes(8, "big")
        pairs[b"\x11" + i.to_bytes(8, "big")] = rng.randbytes(rng.randrange(0, 300))
    pairs[b"\x20big"] = rng.randbytes(5 * MIB)
    pairs[b"\x20zeros"] = bytes(2 * MIB)
    pairs[b"\x00"] = b""  # the smallest key there is, with an empty value
    pairs[b"\xfe\xff\xff"] = b"edge"
    pairs[b"\xff\x00tool"] = b"reserved subspace, not the checkpoint: copied like any key"
    return sorted(pairs.items())


async def fill(settings: dict[str, Any], pairs: list[tuple[bytes, bytes]]) -> None:
    store = open_data_store("fill", settings)
    try:
        for i in range(0, len(pairs), 500):
            batch = WriteBatch()
            for key, value in pairs[i : i + 500]:
                batch.put(key, value)
            await store.write(batch)
    finally:
        await store.close()


async def contents(settings: dict[str, Any]) -> list[tuple[bytes, bytes | None]]:
    store = open_data_store("inspect", settings)
    try:
        return await store.range(b"", KEY_END)
    finally:
        await store.close()


def run_copy(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "store", "copy", "--config", str(config), *args],
        check=False, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def pg(tmp_path: Path) -> Any:
    settings = backends.settings_for("postgresql", tmp_path)
    yield settings
    backends.drop_table(settings)


def lmdb(path: Path) -> dict[str, Any]:
    return {"type": "lmdb", "path": str(path)}


async def test_lmdb_to_postgresql_to_lmdb(tmp_path: Path, pg: dict[str, Any]) -> None:
    data = sample_data(1500)
    config = write_config(
        tmp_path, {"old": lmdb(tmp_path / "old"), "pg": pg, "new": lmdb(tmp_path / "new")}
    )
    await fill(lmdb(tmp_path / "old"), data)

    first = await asyncio.to_thread(run_copy, config, "--from", "old", "--to", "pg")
    assert first.returncode == 0, first.stderr + first.stdout
    assert f"copying {len(data):,} keys in batches of 1,000" in first.stdout
    assert f"identical: {len(data):,} keys" in first.stdout
    assert 'copy verified: checkpoint removed from "pg"' in first.stdout
    # Per-subspace counts, on both sides.
    assert "0x10" in first.stdout and "0x11" in first.stdout and "0xff" in first.stdout
    assert "1,500" in first.stdout.split("0x10", 1)[1].splitlines()[0]
    assert "keys/s" in first.stderr  # the progress line
    assert await contents(pg) == data

    second = await asyncio.to_thread(
        run_copy, config, "--from", "pg", "--to", "new", "--batch", "700"
    )
    assert second.returncode == 0, second.stderr + second.stdout
    assert f"identical: {len(data):,} keys" in second.stdout
    assert await contents(lmdb(tmp_path / "new")) == data  # checkpoint gone, data exact
    # The checksum of a store is the same whatever its backend.
    sums = [line for line in first.stdout.splitlines() if line.startswith("  old:")]
    assert sums and sums[0].split()[-1] in second.stdout


@pytest.mark.parametrize("target", ["sqlite", "postgresql"])
async def test_killed_copy_resumes(tmp_path: Path, target: str) -> None:
    dest = backends.settings_for(target, tmp_path)
    try:
        data = sample_data(6000)
        config = write_config(tmp_path, {"old": lmdb(tmp_path / "old"), "dest": dest})
        await fill(lmdb(tmp_path / "old"), data)

        proc = await asyncio.create_subprocess_exec(
            str(CLI), "store", "copy", "--config", str(config), "--from", "old", "--to",
            "dest", "--batch", "40",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        watcher = open_data_store("watch", dest)
        try:
            state = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.returncode is None:
                raw = await watcher.get(CHECKPOINT_KEY)
                if raw is not None and (state := Checkpoint.decode(raw, "dest")).copied >= 2000:
                    break
                await asyncio.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 30)
            assert proc.returncode == -signal.SIGKILL, "the copy ended before it was killed"
            await asyncio.to_thread(backends.wait_for_writers, dest)

            # The checkpoint covers exactly the committed keys: a prefix of the source.
            raw = await watcher.get(CHECKPOINT_KEY)
            assert raw is not None
            state = Checkpoint.decode(raw, "dest")
            assert not state.complete and 2000 <= state.copied < len(data)
            copied = [p for p in await watcher.range(b"", KEY_END) if p[0] != CHECKPOINT_KEY]
            assert copied == data[: state.copied]
            assert bytes.fromhex(state.last) == copied[-1][0]
        finally:
            await watcher.close()

        resumed = await asyncio.to_thread(
            run_copy, config, "--from", "old", "--to", "dest", "--batch", "500"
        )
        assert resumed.returncode == 0, resumed.stderr + resumed.stdout
        assert f"resuming after key {describe_key(copied[-1][0])}" in resumed.stdout
        assert f"{state.copied:,} of {len(data):,} keys already copied" in resumed.stdout
        assert f"identical: {len(data):,} keys" in resumed.stdout
        assert await contents(dest) == data
    finally:
        backends.drop_table(dest)


async def test_verify_only_names_the_first_difference(tmp_path: Path) -> None:
    data = sample_data(200)
    dest = {"type": "sqlite", "path": str(tmp_path / "dest.db")}
    config = write_config(tmp_path, {"old": lmdb(tmp_path / "old"), "dest": dest})
    await fill(lmdb(tmp_path / "old"), data)
    copied = await asyncio.to_thread(run_copy, config, "--from", "old", "--to", "dest")
    assert copied.returncode == 0, copied.stderr + copied.stdout

    same = await asyncio.to_thread(run_copy, config, "--from", "old", "--to", "dest",
                                   "--verify-only")
    assert same.returncode == 0 and f"identical: {len(data):,} keys" in same.stdout

    changed, value = data[150]
    await fill(dest, [(changed, value + b"!"), (b"\x12extra", b"x")])
    differ = await asyncio.to_thread(run_copy, config, "--from", "old", "--to", "dest",
                                     "--verify-only")
    assert differ.returncode == 1
    assert (
        f"DIFFERENT: 2 key(s) differ; first: key {describe_key(changed)} holds a different "
        f"value (source {len(value)} bytes, destination {len(value) + 1} bytes)"
    ) in differ.stdout
    assert "0x12" in differ.stdout and "<- differs" in differ.stdout
    # verify-only wrote nothing: the modified value is still there, no checkpoint.
    after = dict(await contents(dest))
    assert after[changed] == value + b"!" and CHECKPOINT_KEY not in after


def cli_copy(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["store", "copy", "--config", str(config), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stores = {
        "old": lmdb(tmp_path / "old"),
        "full": lmdb(tmp_path / "full"),
        "files": {"type": "fs", "path": "blobs"},
        "mem": {"type": "memory"},
        "alias": lmdb(tmp_path / "old"),
    }
    config = write_config(tmp_path, stores)
    asyncio.run(fill(stores["full"], [(b"\x10somebody", b"1")]))

    code, text = cli_copy(config, capsys, "--from", "old", "--to", "files")
    assert code == 1
    assert 'destination store "files" is a fs store: store copy handles data stores' in text
    code, text = cli_copy(config, capsys, "--from", "mem", "--to", "old")
    assert code == 1 and 'source store "mem" is a memory store' in text
    code, text = cli_copy(config, capsys, "--from", "old", "--to", "nowhere")
    assert code == 1 and 'destination store "nowhere": no [store."nowhere"]' in text
    code, text = cli_copy(config, capsys, "--from", "old", "--to", "alias")
    assert code == 1 and 'stores "old" and "alias" are the same data' in text
    code, text = cli_copy(config, capsys, "--from", "old", "--to", "full", "--restart")
    assert code == 1
    assert (
        'destination store "full" is not empty (first key 0x10736f6d65626f6479 '
        "(b'\\x10somebody')) and holds no copy checkpoint"
    ) in text
    assert "--restart only discards an unfinished copy" in text
    with pytest.raises(SystemExit):  # argparse: usage error, exit status 2
        cli.main(["store", "copy", "--config", str(config), "--from", "a", "--to", "b",
                  "--batch", "0"])
    assert "--batch: 0 is not at least 1" in capsys.readouterr().err


def test_restart_discards_an_unfinished_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = sample_data(50)
    stores = {"old": lmdb(tmp_path / "old"), "dest": lmdb(tmp_path / "dest"),
              "other": lmdb(tmp_path / "other")}
    config = write_config(tmp_path, stores)
    asyncio.run(fill(stores["old"], data))
    # An unfinished copy from another store: stale keys and a checkpoint naming "other".
    stale = Checkpoint("other", last=b"\x10zz".hex(), copied=1).encode()
    asyncio.run(fill(stores["dest"], [(b"\x10zz", b"stale"), (CHECKPOINT_KEY, stale)]))

    code, text = cli_copy(config, capsys, "--from", "old", "--to", "dest")
    assert code == 1
    assert 'holds an unfinished copy from store "other", not "old"' in text
    code, text = cli_copy(config, capsys, "--from", "old", "--to", "dest", "--restart")
    assert code == 0, text
    assert 'restart: deleted 2 keys from "dest"' in text
    assert f"identical: {len(data):,} keys" in text
    assert asyncio.run(contents(stores["dest"])) == data
