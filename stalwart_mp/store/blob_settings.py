"""Settings of the blob stores (declared with their backends).

``store.*.path`` and ``store.*.timeout`` are shared with other store types and declared in
``store.settings``; the keys here belong to the "fs" and "s3" blob backends only. The S3
object-key prefix is ``key-prefix`` (Stalwart's own name for it): ``prefix`` is the
redis/memcached key prefix, declared with the lookup stores, and a key is declared once.
"""
from __future__ import annotations

from stalwart_mp.config.schema import REQUIRED, SCHEMA, Choice, Int, Setting, Str

FS = ("fs",)
S3 = ("s3",)

SCHEMA.add(
    Setting(
        "store.*.depth",
        Int(min=0, max=4),
        2,
        help=(
            "Levels of sub-folders a blob is filed under, each named after two hex digits of "
            'its hash ("ab/cd/abcd..." with 2), so no folder grows past a few thousand '
            "entries. 0 puts every blob in the store's folder. Do not change it once blobs "
            "are stored: existing ones would no longer be found."
        ),
        when=("type", FS),
    ),
    Setting(
        "store.*.sync",
        Choice("filesystem", "file"),
        "filesystem",
        help=(
            'How new blobs are made durable before a message is acknowledged. "filesystem" '
            "(group sync): the blobs written by concurrent deliveries are flushed together "
            "by one syncfs(2) of the store's file system — much faster under load; it also "
            "flushes whatever else is waiting to be written on that file system, so keep "
            'the blobs on a file system of their own if others write a lot to it. "file": '
            "every blob file and its folder are fsync'ed one by one. Linux has syncfs; "
            'elsewhere "file" is used.'
        ),
        when=("type", FS),
    ),
    Setting(
        "store.*.bucket",
        Str(
            pattern=r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]",
            label="a bucket name (3 to 63 lowercase letters, digits, dots and hyphens)",
        ),
        REQUIRED,
        help="Name of the S3 bucket holding the blobs; it must exist.",
        when=("type", S3),
    ),
    Setting(
        "store.*.region",
        Str(nonempty=True),
        "us-east-1",
        help='Region of the bucket, e.g. "eu-west-1" (most S3-compatible services accept '
        'any value; MinIO uses "us-east-1").',
        when=("type", S3),
    ),
    Setting(
        "store.*.endpoint",
        Str(
            pattern=r"(https?://[^\s/]+(/\S*)?)?",
            label='an http:// or https:// URL such as "https://s3.example.com:9000"',
        ),
        "",
        help=(
            "URL of an S3-compatible service (MinIO, Ceph, Garage, R2...); empty for Amazon "
            'S3 itself. Example: "http://127.0.0.1:9000".'
        ),
        when=("type", S3),
    ),
    Setting(
        "store.*.access-key",
        Str(),
        "",
        help="Access key id; empty to use the usual AWS sources (environment, shared "
        "credentials file, instance role).",
        when=("type", S3),
    ),
    Setting(
        "store.*.secret-key",
        Str(),
        "",
        help="Secret access key going with access-key.",
        when=("type", S3),
        secret=True,
    ),
    Setting(
        "store.*.key-prefix",
        Str(pattern=r"[A-Za-z0-9!_.*'()/\-]{0,200}", label="a key prefix (up to 200 "
            "letters, digits and !_.*'()/-)"),
        "",
        help='Prepended to every object key, e.g. "mail/", so several servers or stores can '
        "share one bucket.",
        when=("type", S3),
    ),
    Setting(
        "store.*.max-retries",
        Int(min=0, max=20),
        3,
        help="How many times a failed S3 request (timeout, throttling, server error) is "
        "retried, with backoff, before the operation fails.",
        when=("type", S3),
    ),
)
