"""How long the message parser takes on inputs built to make naive parsers slow.

Each line is one hostile input (the same ones tests/mail/ingest/test_ingest_adversarial.py
checks for correct results) with its size and the best of --repeat runs, then the same input
at half the size: the ratio should stay near 2 (linear), far below 4 (quadratic). The
timings live here, not in the unit tests (no timed unit tests).

    .venv/bin/python load_tests/bench_ingest.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from stalwart_mp.mail.ingest import parse_message
from stalwart_mp.mail.ingest.dates import parse_date
from stalwart_mp.mail.ingest.params import parse_value
from stalwart_mp.mail.ingest.preview import html_to_text


def _bomb(count: int) -> bytes:
    head = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n"
    return head + b"".join(b"--x\r\n\r\n%d\r\n" % i for i in range(count)) + b"--x--\r\n"


def _nested(depth: int) -> bytes:
    out = b"bottom\r\n"
    for level in range(depth, 0, -1):
        out = (b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (level, level)
               + out + b"\r\n--b%d--\r\n" % level)
    return out


def _attachment(size: int) -> bytes:
    data = os.urandom(size)
    import base64
    return (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
            b"Content-Type: text/plain\r\n\r\nsee attached\r\n--B\r\n"
            b"Content-Type: application/octet-stream; name=big.bin\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(data).replace(b"\n", b"\r\n") + b"\r\n--B--\r\n")


# name -> (make the input for a size n, run it, n)
CASES: dict[str, tuple[Callable[[int], object], Callable[[object], object], int]] = {
    "html <script> flood": (lambda n: "<script>" * n, html_to_text, 100_000),
    "html < flood": (lambda n: "<" * n, html_to_text, 500_000),
    "html unterminated tags": (lambda n: "<p" * n, html_to_text, 200_000),
    "html unclosed comments": (lambda n: "<!--" * n, html_to_text, 100_000),
    "html many styles": (lambda n: "<style>x</style>" * n, html_to_text, 50_000),
    "date of letters": (lambda n: "a" * n, parse_date, 1_000_000),
    "date of numbers": (lambda n: "1 " * n, parse_date, 500_000),
    "parameter continuations": (lambda n: "x/y; " + "a*" * n + "=1", parse_value, 300_000),
    "parameter comments": (lambda n: "x/y; " + "(" * n, parse_value, 300_000),
    "50k-part bomb (max 10k)": (_bomb, lambda raw: parse_message(raw, max_parts=10_000),
                                50_000),
    "boundary flood (max 100)": (
        lambda n: b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + b"--x\r\n" * n,
        lambda raw: parse_message(raw, max_parts=100), 500_000),
    "200-deep nesting (max 50)": (_nested, lambda raw: parse_message(raw, max_depth=50), 200),
    "7.6 MB attachment": (_attachment, parse_message, 7_600_000),
}


def best(run: Callable[[object], object], value: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run(value)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per input (best kept)")
    args = parser.parse_args()
    print(f"{'input':<28} {'size':>10} {'ms':>9} {'ms at n/2':>10} {'ratio':>6}")
    for name, (make, run, n) in CASES.items():
        full, half = make(n), make(n // 2)
        t_full, t_half = best(run, full, args.repeat), best(run, half, args.repeat)
        print(f"{name:<28} {len(full):>10} {t_full * 1000:>9.1f} {t_half * 1000:>10.1f} "
              f"{t_full / max(t_half, 1e-9):>6.1f}", flush=True)


if __name__ == "__main__":
    main()
