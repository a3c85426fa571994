"""A throwaway Postfix on loopback, the peer stalwart-mp's SMTP benchmark is compared with.

Everything lives in a temporary directory (config, queue, data, log) so the system's own
Postfix instance, if any, is never touched; only the Maildir of one local system user
(``bench-mail``, created when missing) is used for the final delivery. Postfix keeps its
defaults where they decide speed: the queue file is fsync'd before the ``250`` after DATA,
and local delivery into the Maildir happens afterwards, asynchronously (qmgr -> local).

    peer = PostfixPeer.start(port)        # needs root and the postfix package
    ...                                   # SMTP on 127.0.0.1:port, RCPT user@bench.test
    peer.stop()                           # stops the instance and removes its files
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DOMAIN = "bench.test"
SYSTEM_USER = "bench-mail"
# The benchmark's recipient (user@bench.test) is an alias of the system user, so both
# servers receive byte-identical sessions.
ALIASES = f"inline:{{ user={SYSTEM_USER} }}"


def _run(*args: str) -> str:
    """Run a Postfix command; raise with its output so a failed start says why."""
    res = subprocess.run(args, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited with {res.returncode}:\n"
                           f"{res.stdout}{res.stderr}")
    return res.stdout


def ensure_system_user() -> Path:
    """The Maildir owner: Postfix's local(8) delivers as a real user, never as root."""
    try:
        home = pwd.getpwnam(SYSTEM_USER).pw_dir
    except KeyError:
        _run("useradd", "-m", "-s", "/usr/sbin/nologin", SYSTEM_USER)
        home = pwd.getpwnam(SYSTEM_USER).pw_dir
    return Path(home)


def main_cf(folder: Path) -> dict[str, str]:
    """main.cf settings: loopback only, one local domain, Maildir, no chroot, file log."""
    return {
        "compatibility_level": "3.6",
        "myhostname": "postfix-peer.bench.test",
        "mydomain": DOMAIN,
        "myorigin": DOMAIN,
        "mydestination": DOMAIN,
        "inet_interfaces": "loopback-only",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination",
        "queue_directory": str(folder / "queue"),
        "data_directory": str(folder / "data"),
        "maillog_file": str(folder / "maillog"),
        "maillog_file_prefixes": str(folder),
        "alias_maps": ALIASES,
        "alias_database": "",
        # no proxymap hop: the default wraps passwd.byname in proxy:, which is for chroots
        "local_recipient_maps": "unix:passwd.byname $alias_maps",
        "home_mailbox": "Maildir/",
        "biff": "no",
        "append_dot_mydomain": "no",
        "smtpd_banner": "$myhostname ESMTP",
        "relayhost": "",
    }


def _write_master_cf(folder: Path, port: int) -> None:
    """The packaged master.cf, with chroot off and the smtpd on 127.0.0.1:port only."""
    shutil.copy("/etc/postfix/master.cf", folder / "master.cf")
    _run("postconf", "-c", str(folder), "-F", "*/*/chroot = n")
    _run("postconf", "-c", str(folder), "-MX", "smtp/inet")
    _run("postconf", "-c", str(folder), "-M",
         f"127.0.0.1:{port}/inet = 127.0.0.1:{port} inet n - n - - smtpd")


@dataclass
class PostfixPeer:
    """A running throwaway instance: its config dir and the Maildir it delivers to."""

    folder: Path
    port: int
    maildir: Path

    @classmethod
    def start(cls, port: int) -> PostfixPeer:
        if shutil.which("postfix") is None:
            raise RuntimeError("postfix is not installed: apt-get install -y postfix")
        home = ensure_system_user()
        maildir = home / "Maildir"
        shutil.rmtree(maildir, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(prefix="postfix-peer-"))
        os.chmod(folder, 0o755)  # the postfix user must reach its queue below it
        (folder / "queue").mkdir(mode=0o755)  # postfix chdirs here before creating the rest
        (folder / "main.cf").write_text("")  # compiled-in defaults for everything else
        settings = [f"{k}={v}" for k, v in main_cf(folder).items()]
        _run("postconf", "-c", str(folder), "-e", *settings)
        _write_master_cf(folder, port)
        peer = cls(folder, port, maildir)
        try:
            _run("postfix", "-c", str(folder), "check")
            _run("postfix", "-c", str(folder), "start")
            peer.wait_listening()
        except Exception:
            peer.stop()
            raise
        return peer

    def wait_listening(self, timeout: float = 15.0) -> None:
        """Postfix returns from ``start`` before its master binds; wait for the banner."""
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(512).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postfix did not answer on 127.0.0.1:{self.port} within "
                           f"{timeout:.0f}s; log:\n{self.log_tail()}")

    def master_pid(self) -> int:
        return int((self.folder / "queue" / "pid" / "master.pid").read_text().split()[0])

    def delivered(self) -> int:
        """Messages local(8) has put into the Maildir so far."""
        try:
            return sum(1 for _ in os.scandir(self.maildir / "new"))
        except FileNotFoundError:
            return 0

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return (self.folder / "maillog").read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Stop the instance (``abort`` if a graceful stop fails) and remove its files."""
        for verb in ("stop", "abort"):
            res = subprocess.run(["postfix", "-c", str(self.folder), verb],
                                 capture_output=True, text=True, check=False)
            if res.returncode == 0:
                break
        for _ in range(50):  # the master exits shortly after ``stop`` returns
            if not (self.folder / "queue" / "pid" / "master.pid").exists():
                break
            time.sleep(0.1)
        shutil.rmtree(self.folder, ignore_errors=True)
        shutil.rmtree(self.maildir, ignore_errors=True)
