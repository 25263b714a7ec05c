"""A throwaway S3 server on loopback: moto's server mode in a child process.

A process of its own, so a test can stop it (S3 "down") while the mail
server keeps running, and so its threads do not share the test's GIL. It
keeps objects in memory and accepts any key pair; each test gets a bucket
of its own (``bucket()``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3

from serverproc import free_ports

START_TIMEOUT = 30.0
KEY, SECRET = "postwarden-test", "postwarden-test-secret"
MOTO_SERVER = Path(sys.executable).with_name("moto_server")


@functools.cache
def client(endpoint: str) -> Any:
    """One boto3 client per endpoint for the run (they are thread-safe): making one
    loads the service's model, about 0.05 s of CPU, and each bucket and listing made one."""
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=KEY, aws_secret_access_key=SECRET)


def keys(endpoint: str, bucket: str) -> list[str]:
    """The object names in ``bucket``."""
    reply = client(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(obj["Key"] for obj in reply.get("Contents", []))


class S3Server:
    def __init__(self) -> None:
        self.port = free_ports(1)[0]  # below the ephemeral range
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._names = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Server:
        self._proc = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:  # bounded: wait for the port to answer
            if self._proc.poll() is not None:
                raise RuntimeError("moto_server exited at start")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.05)  # polling a port, not synchronising with a test's event
        self.stop()
        raise RuntimeError(f"moto_server did not listen within {START_TIMEOUT}s")

    def client(self) -> Any:
        return client(self.endpoint)

    def bucket(self) -> str:
        """A new, empty bucket; its name."""
        name = f"pw-test-{next(self._names)}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, bucket: str) -> dict[str, Any]:
        """The ``[s3]`` table for ``bucket``."""
        return {"endpoint": self.endpoint, "bucket": bucket, "access_key": KEY,
                "secret_key": SECRET}

    def keys(self, bucket: str) -> list[str]:
        return keys(self.endpoint, bucket)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()  # objects live in its memory: nothing to shut down cleanly
            proc.wait(timeout=30)


@contextlib.contextmanager
def running_s3() -> Iterator[S3Server]:
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()
