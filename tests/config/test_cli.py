"""The stalwart-mp command line, run as a user runs it."""
from __future__ import annotations

import asyncio
import tomllib

from stalwart_mp.config.loader import load_file
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.passwords import verify_password
from stalwart_mp.store.configured import open_data_store
from tests.harness import cli


def test_help_teaches():
    out = cli("--help").stdout
    for word in ("init", "serve", "check-config", "--dev-ports", "HUP"):
        assert word in out
    assert "--admin-password" in cli("init", "--help").stdout


def _admin(config_path):
    async def read():
        store = await open_data_store(load_file(config_path))
        try:
            return await InternalDirectory(store).principal("admin")
        finally:
            await store.close()

    return asyncio.run(read())


def test_init_writes_valid_commented_config_and_prints_password(tmp_path):
    res = cli("init", "--dir", str(tmp_path / "m"), "--dev-ports", "--hostname", "mx.test.org")
    assert res.returncode == 0, res.stderr
    password = next(line.split(": ", 1)[1] for line in res.stdout.splitlines()
                    if line.startswith("Administrator password: "))
    config = tmp_path / "m" / "config.toml"
    text = config.read_text()
    assert "# The server's fully qualified host name" in text
    data = tomllib.loads(text)
    assert data["server"]["hostname"] == "mx.test.org"
    assert data["server"]["listener"]["https"]["bind"] == ["127.0.0.1:8443"]
    assert (tmp_path / "m" / "data").is_dir() and (tmp_path / "m" / "run").is_dir()
    check = cli("check-config", "--config", str(config))
    assert check.returncode == 0, check.stderr
    admin = _admin(config)
    assert admin.roles == ["admin"]
    assert admin.secrets[0].startswith("{ARGON2ID}$argon2id$")
    assert verify_password(admin.secrets[0], password)
    assert not verify_password(admin.secrets[0], password + "x")
    # a second init refuses to overwrite; with --force the admin keeps its password
    assert cli("init", "--dir", str(tmp_path / "m")).returncode == 1
    res = cli("init", "--dir", str(tmp_path / "m"), "--force", "--dev-ports")
    assert res.returncode == 0 and "already exists" in res.stdout
    assert verify_password(_admin(config).secrets[0], password)


def test_init_standard_ports_and_password_from_environment(tmp_path):
    res = cli("init", "--dir", str(tmp_path), "--hostname", "mail.example.com",
              env={"STALWART_MP_ADMIN_PASSWORD": "correct horse battery"})
    assert res.returncode == 0, res.stderr
    assert "Administrator password" not in res.stdout
    data = tomllib.loads((tmp_path / "config.toml").read_text())
    assert data["server"]["listener"]["https"]["bind"] == ["0.0.0.0:443"]
    assert data["admin"] == {"enabled": True, "bind": "127.0.0.1:8080"}
    assert "Web admin (once started): http://127.0.0.1:8080/" in res.stdout
    assert verify_password(_admin(tmp_path / "config.toml").secrets[0], "correct horse battery")


def test_check_config_lists_every_error(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text("""
[server]
hostname = "mail.example.com"
workers = -2
[server.listener.web]
bind = ["127.0.0.1:notaport"]
protocol = "gopher"
[store.default]
type = "lmdb"
[store.search]
type = "whoosh"
path = "fts"
[storage]
data = "default"
fts = "search"
[logging]
levle = "debug"
""")
    res = cli("check-config", "--config", str(bad))
    assert res.returncode == 1
    err = res.stderr
    assert "5 error(s)" in err, err
    assert "server.workers = -2: expected an integer >= 1" in err
    assert 'server.listener.web.bind = ["127.0.0.1:notaport"]: item 1: expected an address' in err
    assert 'server.listener.web.protocol = "gopher": expected one of "smtp"' in err
    assert 'logging.levle: unknown key; did you mean "logging.level"?' in err
    assert "store.default.path: required: a string" in err


def test_check_config_checks_the_stored_settings(tmp_path):
    """check-config validates the file with the data store's stored settings over it, as the
    server runs it; --file-only skips them; a store not created yet is not created."""
    from stalwart_mp.config.stored import write_stored

    assert cli("init", "--dir", str(tmp_path / "m"), "--dev-ports").returncode == 0
    config = tmp_path / "m" / "config.toml"

    def store(set_values, unset=()):
        async def run():
            data = await open_data_store(load_file(config))
            try:
                await write_stored(data, set_values, list(unset))
            finally:
                await data.close()
        asyncio.run(run())

    store({"server.workers": -3, "imap.max-literal": 4096})
    res = cli("check-config", "--config", str(config))
    assert res.returncode == 1
    assert "+ stored settings" in res.stderr
    assert "server.workers = -3: expected an integer >= 1 and <= 512 [stored setting" in res.stderr
    assert cli("check-config", "--config", str(config), "--file-only").returncode == 0
    store({}, ["server.workers"])
    res = cli("check-config", "--config", str(config))
    assert res.returncode == 0, res.stderr
    assert "configuration is valid with 1 stored settings" in res.stdout
    # the same file in a folder whose data store does not exist yet: checked, not created
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.toml").write_text(config.read_text())
    res = cli("check-config", "--config", str(fresh / "config.toml"))
    assert res.returncode == 0, res.stderr
    assert "stored settings" not in res.stdout + res.stderr
    assert not (fresh / "data").exists()
