"""The Config service and the control plane's admin credentials, over real gRPC.

A real `stalwart-mp serve` (tests/harness.py) runs; settings are validated, stored in its
data store, and applied by the master on ReloadConfig; a broken stored setting is refused
with FAILED_PRECONDITION while the server keeps serving its old configuration. The last
test bans the loopback address (allowed-networks is empty here): keep it last.
"""
from __future__ import annotations

import asyncio
import json
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from stalwart_mp.config import stored
from stalwart_mp.config.loader import ConfigInvalid
from stalwart_mp.control.client import connect
from stalwart_mp.control.gen.stalwart_mp.v1 import (
    config_pb2,
    config_pb2_grpc,
    principals_pb2,
    principals_pb2_grpc,
)
from stalwart_mp.store.data import WriteBatch
from stalwart_mp.store.registry import open_data_store
from tests.harness import Server, base_config, free_port, http_get
from tests.smtp.smtp_env import setup_accounts

EXTRA = """
[store."spare"]
type = "postgresql"
password = "hunter2-secret"

[auth.ban]
failures = 4
allowed-networks = []
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("config")
    (folder / "data").mkdir()
    setup_accounts(folder, [("alice", "alice-pw", None)])
    port = free_port()
    srv = Server(folder, port, base_config(folder, port, workers=1, extra=EXTRA))
    srv.start(wait_workers=1)
    srv.wait_for((srv.run_dir / "control.token").exists, "the control token")
    try:
        yield srv
    finally:
        srv.stop()


def _bind(srv: Server) -> str:
    return tomllib.loads(srv.config_text)["control"]["bind"]


def _stub(srv: Server, **credentials: str):
    if not credentials:
        credentials = {"token": (srv.run_dir / "control.token").read_text().strip()}
    return connect(_bind(srv), **credentials)


def _config(stub) -> config_pb2_grpc.ConfigStub:
    return config_pb2_grpc.ConfigStub(stub.channel)


def _settings(snapshot: config_pb2.ConfigSnapshot) -> dict[str, tuple[str, str, bool]]:
    return {s.key: (s.value, s.source, s.secret) for s in snapshot.settings}


def _store_raw(srv: Server, values: dict[str, bytes]) -> None:
    """Write stored settings straight into the server's LMDB store, bypassing validation
    (as another node, or an older version, might have)."""
    async def run() -> None:
        data = open_data_store("default", {"type": "lmdb",
                                           "path": str(srv.folder / "data" / "lmdb")})
        batch = WriteBatch()
        for key, value in values.items():
            batch.put(stored.setting_key(key), value)
        await data.write(batch)
        await data.close()

    asyncio.run(run())


def test_get_config_effective_values_sources_and_redaction(server):
    with _stub(server) as stub:
        snapshot = _config(stub).GetConfig(config_pb2.GetConfigRequest(), timeout=20)
    settings = _settings(snapshot)
    assert settings["server.hostname"] == ('"mail.test.example"', "file", False)
    assert settings["smtp.max-recipients"][1] == "default"
    assert settings["store.spare.password"] == ('"********"', "file", True)
    assert b"hunter2" not in snapshot.SerializeToString()
    assert snapshot.config_path == str(server.config_path.resolve())
    assert "store." in snapshot.bootstrap and "server.listener." in snapshot.bootstrap
    assert list(snapshot.stored) == [] and list(snapshot.errors) == []
    with _stub(server) as stub:
        smtp_only = _config(stub).GetConfig(config_pb2.GetConfigRequest(prefix="smtp."),
                                            timeout=20)
    assert smtp_only.settings and all(s.key.startswith("smtp.") for s in smtp_only.settings)


def test_validate_reports_every_error_with_key_and_reason(server):
    change = config_pb2.ConfigChange(
        set={"smtp.max-recipients": '"many"', "server.workers": "0",
             "control.bind": '"127.0.0.1:1"', "smtp.bogus": "1",
             "smtp.max-message-size": "{bad"},
        unset=["smtp.greylist.enabled"])
    with _stub(server) as stub:
        result = _config(stub).ValidateConfig(change, timeout=20)
        assert not result.valid
        reasons = {e.key: e.reason for e in result.errors}
        assert set(reasons) == {"smtp.max-recipients", "server.workers", "control.bind",
                                "smtp.bogus", "smtp.max-message-size",
                                "smtp.greylist.enabled"}, reasons
        assert "bootstrap" in reasons["control.bind"]
        assert "unknown key" in reasons["smtp.bogus"]
        assert "not JSON" in reasons["smtp.max-message-size"]
        assert "expected an integer" in reasons["server.workers"]
        assert "no stored value" in reasons["smtp.greylist.enabled"]
        assert any(e.message.startswith('smtp.max-recipients = "many"') for e in result.errors)

        good = _config(stub).ValidateConfig(
            config_pb2.ConfigChange(set={"smtp.max-recipients": "9"}), timeout=20)
        assert (good.valid, list(good.errors)) == (True, [])
        # validating stores nothing; an invalid update stores nothing either
        with pytest.raises(grpc.RpcError) as refused:
            _config(stub).UpdateConfig(change, timeout=20)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "control.bind" in refused.value.details()
        assert "smtp.bogus" in refused.value.details()
        with pytest.raises(grpc.RpcError) as empty:
            _config(stub).UpdateConfig(config_pb2.ConfigChange(), timeout=20)
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert empty.value.details().startswith("set:")
        snapshot = _config(stub).GetConfig(config_pb2.GetConfigRequest(), timeout=20)
    assert list(snapshot.stored) == []


def test_update_then_reload_applies_the_stored_settings(server):
    with _stub(server) as stub:
        response = _config(stub).UpdateConfig(config_pb2.ConfigChange(
            set={"smtp.max-recipients": "7", "server.workers": "2"}), timeout=20)
        assert [(s.key, s.value) for s in response.stored] == [
            ("server.workers", "2"), ("smtp.max-recipients", "7")]
        mirror = json.loads((server.run_dir / "stored-settings.json").read_text())
        assert mirror == {"settings": {"server.workers": 2, "smtp.max-recipients": 7}}
        settings = _settings(_config(stub).GetConfig(config_pb2.GetConfigRequest(),
                                                     timeout=20))
        assert settings["smtp.max-recipients"] == ("7", "stored", False)
        assert len(server.worker_pids()) == 1  # stored, not yet applied

        generation = server.status()["generation"]
        result = _config(stub).ReloadConfig(config_pb2.ReloadConfigRequest(), timeout=60)
    assert result.generation == generation + 1
    assert server.status()["generation"] == generation + 1
    # the master runs the stored server.workers = 2
    server.wait_for(lambda: len(server.worker_pids()) == 2, "two workers")


def test_reload_with_broken_stored_settings_keeps_the_running_config(server):
    before = server.status()["generation"]
    _store_raw(server, {"smtp.max-recipients": b'"lots"',
                        "server.heartbeat-timeout": b'"soon"'})
    with _stub(server) as stub:
        with pytest.raises(grpc.RpcError) as refused:
            _config(stub).ReloadConfig(config_pb2.ReloadConfigRequest(), timeout=60)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = refused.value.details()
        assert 'smtp.max-recipients = "lots"' in details
        assert 'server.heartbeat-timeout = "soon"' in details
        assert "stored setting" in details
        status = server.status()
        assert status["generation"] == before
        assert status["last_reload"]["applied"] is False
        assert len(status["last_reload"]["errors"]) == 2
        assert http_get(server.http_port, "/healthz/ready")[0] == 200  # still serving

        snapshot = _config(stub).GetConfig(config_pb2.GetConfigRequest(), timeout=20)
        assert {e.key for e in snapshot.errors} == {"smtp.max-recipients",
                                                    "server.heartbeat-timeout"}
        # repair: remove both, then the reload is applied
        _config(stub).UpdateConfig(config_pb2.ConfigChange(
            unset=["smtp.max-recipients", "server.heartbeat-timeout"]), timeout=20)
        result = _config(stub).ReloadConfig(config_pb2.ReloadConfigRequest(), timeout=60)
    assert result.generation == before + 1


def test_stored_settings_apply_at_start_and_survive_a_lost_run_folder(server):
    """Stored now: server.workers = 2 (the update test)."""
    mirror = server.run_dir / "stored-settings.json"
    server.stop()
    server.start(wait_workers=2)  # the master reads the mirror at start
    assert server.status()["generation"] == 1

    server.stop()
    mirror.unlink()  # e.g. a run folder on tmpfs after a reboot
    server.start(wait_workers=1)
    # the master started on the file alone; the control child rewrites the mirror from the
    # data store and asks the master to reload
    server.wait_for(lambda: (server.status() or {}).get("generation") == 2, "the reload")
    server.wait_for(lambda: len(server.worker_pids()) == 2, "two workers")
    assert json.loads(mirror.read_text()) == {"settings": {"server.workers": 2}}


def test_admin_credentials_non_admin_refused_audit_and_ban(server):
    with _stub(server) as stub:
        principals = principals_pb2_grpc.PrincipalsStub(stub.channel)
        principals.CreatePrincipal(principals_pb2.CreatePrincipalRequest(
            name="root", password="root-pw", roles=["user", "admin"]), timeout=30)

    with _stub(server, user="root", password="root-pw") as stub:
        _config(stub).UpdateConfig(config_pb2.ConfigChange(
            set={"smtp.greeting-delay": '"1s"'}), timeout=30)
        principals = principals_pb2_grpc.PrincipalsStub(stub.channel)
        assert principals.GetPrincipal(principals_pb2.GetPrincipalRequest(name="alice"),
                                       timeout=30).name == "alice"
    log = (server.folder / "server.log").read_text(errors="replace")
    audit = [line for line in log.splitlines() if "control change" in line]
    assert any("root" in line and "config.update" in line and "greeting-delay" in line
               for line in audit), audit
    assert any("principal.create" in line and "token" in line for line in audit), audit
    assert any("config.reload" in line and "applied=false" in line.lower() for line in audit)
    assert any("server.reload" in line for line in audit), audit
    assert "root-pw" not in log

    with _stub(server, user="alice", password="alice-pw") as stub, \
            pytest.raises(grpc.RpcError) as denied:
        _config(stub).GetConfig(config_pb2.GetConfigRequest(), timeout=30)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert '"alice" is not an administrator' in denied.value.details()

    # wrong passwords count toward the IP ban (auth.ban.failures = 4, loopback not exempt)
    codes = []
    for _ in range(4):
        with _stub(server, user="root", password="wrong") as stub, \
                pytest.raises(grpc.RpcError) as wrong:
            _config(stub).GetConfig(config_pb2.GetConfigRequest(), timeout=30)
        codes.append(wrong.value.code())
        assert "invalid user name or password" in wrong.value.details()
    assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED}
    with _stub(server, user="root", password="root-pw") as stub, \
            pytest.raises(grpc.RpcError) as banned:
        _config(stub).GetConfig(config_pb2.GetConfigRequest(), timeout=30)
    assert banned.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "banned" in banned.value.details()


# --- the stored layer alone --------------------------------------------------------------


def test_merge_check_keys_and_mirror(tmp_path: Path):
    merged = stored.merge({"smtp": {"max-recipients": 5}, "server": {"workers": 1}},
                          {"smtp.max-recipients": 9, "smtp.greylist.enabled": True})
    assert merged == {"smtp": {"max-recipients": 9, "greylist": {"enabled": True}},
                      "server": {"workers": 1}}
    errors = {e.key: e.message for e in stored.check_keys(
        {"store.x.path": "a", "bad key": 1, "smtp.max-recipients": {"a": 1}, "smtp.ok": 1})}
    assert set(errors) == {"store.x.path", "bad key", "smtp.max-recipients"}
    assert stored.is_bootstrap("server.listener.smtp.bind")
    assert not stored.is_bootstrap("server.workers")

    assert stored.read_overlay(tmp_path) == {}
    assert stored.write_overlay(tmp_path, {}) is False  # nothing to mirror: no file
    assert not (tmp_path / stored.OVERLAY_FILE).exists()
    assert stored.write_overlay(tmp_path, {"server.workers": 3}) is True
    assert stored.write_overlay(tmp_path, {"server.workers": 3}) is False
    assert stored.read_overlay(tmp_path) == {"server.workers": 3}
    assert (tmp_path / stored.OVERLAY_FILE).stat().st_mode & 0o077 == 0


def test_load_with_stored_and_start_fallback(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(base_config(tmp_path, free_port(), workers=1))
    run = tmp_path / "run"
    run.mkdir()
    assert stored.load_with_stored(config).get("server.workers") == 1
    stored.write_overlay(run, {"server.workers": 3})
    assert stored.load_with_stored(config).get("server.workers") == 3
    stored.write_overlay(run, {"server.workers": "three"})
    with pytest.raises(ConfigInvalid) as broken:
        stored.load_with_stored(config)
    assert broken.value.errors[0].key == "server.workers"
    assert stored.STORED_SUFFIX in broken.value.errors[0].message
    cfg, problem = stored.load_for_start(config)  # starts on the file alone
    assert cfg.get("server.workers") == 1
    assert problem is not None and problem.errors[0].key == "server.workers"
