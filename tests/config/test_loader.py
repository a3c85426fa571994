"""The settings schema and loader: typed values, defaults, and errors a person can act on."""
from __future__ import annotations

import pytest

from stalwart_mp.config.loader import ConfigInvalid, load_dict, load_file
from stalwart_mp.config.schema import BindAddress, Duration, Invalid, Size

MINIMAL = {
    "server": {
        "hostname": "mail.example.com",
        "listener": {"http": {"bind": ["127.0.0.1:8081"], "protocol": "http"}},
    },
    "store": {"default": {"type": "lmdb", "path": "data/lmdb"},
              "search": {"type": "whoosh", "path": "data/fts"}},
    "storage": {"data": "default", "fts": "search"},
}


def errors_of(data: dict) -> list[str]:
    with pytest.raises(ConfigInvalid) as exc:
        load_dict(data)
    return [str(e) for e in exc.value.errors]


def with_(**changes) -> dict:
    import copy

    data = copy.deepcopy(MINIMAL)
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


def test_minimal_config_fills_defaults():
    cfg = load_dict(MINIMAL)
    assert cfg.get("server.hostname") == "mail.example.com"
    assert cfg.get("server.workers") >= 1
    assert cfg.get("server.graceful-timeout") == 30.0
    assert cfg.get("control.bind") == "127.0.0.1:50051"
    assert cfg.get("admin.bind") == "127.0.0.1:8080"
    assert cfg.names("server.listener") == ["http"]
    assert cfg.get(("server", "listener", "http", "tls", "implicit")) is False
    assert cfg.get(("server", "listener", "http", "max-connections-per-ip")) == 64


def test_wrong_type_names_key_value_and_expectation():
    assert errors_of(with_(server__workers="many")) == [
        'server.workers = "many": expected an integer >= 1 and <= 512'
    ]


def test_every_error_is_listed_not_just_the_first():
    data = with_(server__workers=0, server__hostname="bad host!")
    data["logging"] = {"format": "xml"}
    errs = errors_of(data)
    assert len(errs) == 3
    assert any(e.startswith("server.workers = 0") for e in errs)
    assert any(e.startswith('server.hostname = "bad host!": expected a host name') for e in errs)
    assert any(e.startswith('logging.format = "xml": expected one of "logfmt", "json"')
               for e in errs)


def test_unknown_key_suggests_the_closest():
    errs = errors_of(with_(server__wrokers=2))
    assert errs == ['server.wrokers: unknown key; did you mean "server.workers"?']
    errs = errors_of(with_(server__listener__http__protocl="http"))
    assert errs == ['server.listener.http.protocl: unknown key; did you mean '
                    '"server.listener.http.protocol"?']


def test_unknown_section_without_close_match():
    data = with_()
    data["nonsense"] = {"x": 1}
    assert errors_of(data) == ["nonsense: unknown key"]


def test_missing_required_setting():
    data = with_()
    del data["server"]["hostname"]
    assert errors_of(data) == ["server.hostname: required: a host name such as mail.example.com"]
    data = with_()
    del data["server"]["listener"]["http"]["protocol"]
    assert errors_of(data)[0].startswith("server.listener.http.protocol: required: one of")


def test_protocol_not_served_by_this_build():
    data = with_()
    data["server"]["listener"]["pop"] = {"bind": ["127.0.0.1:1110"], "protocol": "pop3"}
    errs = errors_of(data)
    assert errs == ['server.listener.pop.protocol = "pop3": this protocol is not served by '
                    "this version of stalwart-mp (served: http, imap, lmtp, smtp, submission)"]


def test_same_address_on_two_listeners():
    data = with_()
    data["server"]["listener"]["other"] = {"bind": ["127.0.0.1:8081"], "protocol": "http"}
    assert errors_of(data) == ['server.listener.other.bind = "127.0.0.1:8081": 127.0.0.1:8081 '
                               'is already bound by listener "http"']


def test_bind_address_forms():
    t = BindAddress()
    assert t.parse("0.0.0.0:25") == "0.0.0.0:25"
    assert t.parse("[::]:993") == "[::]:993"
    for bad in ("25", "host", ":25", "1.2.3.4:99999", "unix:/x", "[::1]25"):
        with pytest.raises(Invalid):
            t.parse(bad)
    assert BindAddress(allow_unix=True).parse("unix:/run/s.sock") == "unix:/run/s.sock"


def test_durations_and_sizes():
    d = Duration()
    assert d.parse(5) == 5.0 and d.parse("500ms") == 0.5 and d.parse("2h") == 7200
    with pytest.raises(Invalid):
        d.parse("soon")
    s = Size()
    assert s.parse("50MB") == 50 * 1024**2 and s.parse(10) == 10 and s.parse("1GiB") == 1024**3
    with pytest.raises(Invalid):
        s.parse("-1")


def test_file_errors(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("[server\nhostname=")
    with pytest.raises(ConfigInvalid) as exc:
        load_file(bad)
    assert "not valid TOML" in str(exc.value)
    with pytest.raises(ConfigInvalid) as exc:
        load_file(tmp_path / "missing.toml")
    assert "cannot read" in str(exc.value)


def test_paths_resolve_against_config_folder(tmp_path):
    f = tmp_path / "config.toml"
    f.write_text('[server]\nhostname = "a.example"\n[store.default]\ntype = "sqlite"\n'
                 'path = "db.sqlite"\n[storage]\ndata = "default"\n')
    cfg = load_file(f)
    assert cfg.path("server.data-dir") == tmp_path / "data"
