"""Fixtures shared by the test modules: a local S3 server (moto, in a subprocess)."""

from __future__ import annotations

from typing import Iterator

import pytest

from s3server import S3Server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """An S3-compatible server on loopback for one test module, with a bucket
    ``lancefeed``; ``s3.storage_options()`` reaches it, ``s3.create_bucket(name)`` adds one."""
    with S3Server() as server:
        server.create_bucket("lancefeed")
        yield server
