"""The master and its workers, started for real and driven over loopback."""
from __future__ import annotations

import concurrent.futures
import json
import re
import signal
import socket
import threading
import time

import pytest

from tests.harness import Server, base_config, free_port, http_get


@pytest.fixture
def server(tmp_path):
    port = free_port()
    srv = Server(tmp_path, port, base_config(tmp_path, port, workers=3))
    srv.start(wait_workers=3)
    yield srv
    srv.stop()


def _pids_over_connections(port: int, n: int = 6, path: str = "/_test/block?seconds=0.3"
                           ) -> list[int]:
    """n requests at once that each block their worker's loop for a moment, so that the
    other workers must accept the rest: the answers show which processes share the port."""
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda _: http_get(port, path), range(n)))
    assert all(status == 200 for status, _, _ in results)
    return [int(headers["x-stalwart-worker"]) for _, headers, _ in results]


def test_workers_share_one_port(server):
    workers = server.worker_pids()
    assert len(workers) == 3
    seen = set(_pids_over_connections(server.http_port, 9))
    assert seen <= workers, "every answer comes from a worker of the status file"
    assert len(seen) >= 2, f"one port, answered by several workers: {seen}"


def test_killed_worker_is_replaced_within_two_seconds(server):
    victim = min(server.worker_pids())
    started = time.monotonic()
    import os

    os.kill(victim, signal.SIGKILL)
    server.wait_for(lambda: victim not in server.worker_pids()
                    and len(server.worker_pids()) == 3, "a replacement worker", timeout=5)
    assert time.monotonic() - started < 2.0
    assert http_get(server.http_port, "/healthz/ready")[0] == 200


def _pids(status: dict | None, kind: str) -> set[int]:
    return {p["pid"] for p in (status or {}).get("processes", []) if p["kind"] == kind}


def test_hup_changes_worker_count(server):
    old = server.worker_pids()
    before = server.status()
    server.config_path.write_text(server.config_text.replace("workers = 3", "workers = 2"))
    server.signal(signal.SIGHUP)
    server.wait_for(lambda: (server.status() or {}).get("generation") == 2
                    and len(server.worker_pids()) == 2, "generation 2 with 2 workers")
    st = server.status()
    assert st["last_reload"]["applied"] is True
    new = server.worker_pids()
    assert not (new & old), "the old generation was retired"
    assert {p["generation"] for p in st["processes"] if p["kind"] == "worker"} == {2}
    assert http_get(server.http_port, "/healthz/live")[0] == 200
    # the queue process rolls too (it runs on the settings); the control plane stays (it
    # re-reads the config itself) so that Reload calls in progress are answered
    server.wait_for(lambda: _pids(server.status(), "queue")
                    and not _pids(server.status(), "queue") & _pids(before, "queue"),
                    "a new queue process")
    assert _pids(server.status(), "control") == _pids(before, "control")


def test_hup_with_broken_config_keeps_serving(server):
    before = server.worker_pids()
    server.config_path.write_text(server.config_text.replace("workers = 3", 'workers = "x"')
                                  + "\n[bogus]\nkey = 1\n")
    server.signal(signal.SIGHUP)
    server.wait_for(lambda: (server.status() or {}).get("last_reload") is not None,
                    "the reload result")
    st = server.status()
    assert st["last_reload"]["applied"] is False
    errors = "\n".join(st["last_reload"]["errors"])
    assert 'server.workers = "x": expected an integer' in errors
    assert "bogus: unknown key" in errors
    assert st["generation"] == 1
    assert server.worker_pids() == before
    assert http_get(server.http_port, "/healthz/ready")[0] == 200
    assert "reload refused" in server.logs()


def test_ttin_ttou_change_worker_count(server):
    server.signal(signal.SIGTTIN)
    server.wait_for(lambda: len(server.worker_pids()) == 4, "4 workers")
    # one signal at a time: Unix coalesces a signal sent again before it was handled
    server.signal(signal.SIGTTOU)
    server.wait_for(lambda: len(server.worker_pids()) == 3, "3 workers")
    server.signal(signal.SIGTTOU)
    server.wait_for(lambda: len(server.worker_pids()) == 2, "2 workers")


def test_hung_worker_is_killed_and_replaced(server):
    result = {}

    def block():
        try:
            result["r"] = http_get(server.http_port, "/_test/block?seconds=20", timeout=30)
        except OSError as exc:
            result["r"] = exc

    before = server.worker_pids()
    t = threading.Thread(target=block)
    t.start()
    # heartbeat-timeout is 3 s: the blocked worker is killed and a new one takes its place
    server.wait_for(lambda: len(server.worker_pids() - before) >= 1
                    and len(server.worker_pids()) == 3, "the hung worker's replacement",
                    timeout=15)
    t.join(30)
    assert isinstance(result["r"], OSError) or result["r"][0] != 200
    assert "worker hung" in server.logs()


def test_metrics_count_requests_across_workers(server):
    pids = _pids_over_connections(server.http_port, 9)
    pids += _pids_over_connections(server.http_port, 20, "/healthz/live")
    assert len(set(pids)) >= 2
    status, headers, body = http_get(server.http_port, "/metrics")
    assert status == 200
    text = body.decode()

    def sample(route: str) -> float:
        m = re.search(r'stalwart_http_requests_total\{listener="http",route="%s",'
                      r'status="200"\} (\d+(?:\.\d+)?)' % re.escape(route), text)
        assert m, text[:3000]
        return float(m.group(1))

    assert sample("/_test/block") == 9
    assert sample("/healthz/live") == 20
    assert re.search(r"^stalwart_worker_processes 3\.0$", text, re.MULTILINE), text[:3000]


def test_event_bus_delivers_between_workers(server):
    for attempt in range(5):
        topic = f"t{attempt}"
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            waiters = [pool.submit(http_get, server.http_port,
                                   f"/_test/wait?topic={topic}&timeout=8") for _ in range(6)]
            time.sleep(1.0)  # let every waiter subscribe
            status, _, body = http_get(server.http_port, f"/_test/publish?topic={topic}&data=hi")
            assert status == 200
            publisher = json.loads(body)["pid"]
            answers = [json.loads(w.result()[2]) for w in waiters]
        assert all(a.get("data") == "hi" for a in answers), answers
        if any(a["pid"] != publisher for a in answers):
            return
    pytest.fail("no waiter ever ran in another worker than the publisher")


def test_term_drains_in_flight_request(server):
    result = {}

    def slow():
        result["r"] = http_get(server.http_port, "/_test/sleep?seconds=2", timeout=15)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    server.signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.http_port), timeout=2).recv(1)
    t.join(15)
    status, _, body = result["r"]
    assert status == 200 and json.loads(body)["slept"] == 2
    assert server.proc.wait(20) == 0


def test_hup_rebinds_only_changed_listeners(server):
    extra_port = free_port()
    added = server.config_text + (f'\n[server.listener.extra]\nbind = ["127.0.0.1:{extra_port}"]'
                                  '\nprotocol = "http"\n')
    server.config_path.write_text(added)
    server.signal(signal.SIGHUP)
    server.wait_for(lambda: (server.status() or {}).get("generation") == 2, "generation 2")
    server.wait_for(lambda: _answers(extra_port), "the new listener")
    assert {lst["name"] for lst in server.status()["listeners"]} == {"http", "extra"}
    # the unchanged listener kept its socket: it never stopped answering
    assert http_get(server.http_port, "/healthz/live")[0] == 200
    assert server.logs().count(f"address=127.0.0.1:{server.http_port}") == 1
    server.config_path.write_text(server.config_text)
    server.signal(signal.SIGHUP)
    server.wait_for(lambda: (server.status() or {}).get("generation") == 3, "generation 3")
    server.wait_for(lambda: not _answers(extra_port), "the removed listener to close")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", extra_port), timeout=2)


def _answers(port: int) -> bool:
    try:
        return http_get(port, "/healthz/live", timeout=2)[0] == 200
    except OSError:
        return False
