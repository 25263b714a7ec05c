"""Objects in one S3 bucket, named by the SHA-256 of their bytes.

boto3 is the client: AWS's own, kept in step with the S3 API, and the one
moto (the S3 server the tests run on loopback) is built around, so the
tests speak to the server exactly as production does. It is imported only
when a configuration asks for S3. Every call blocks: store code on the
event loop makes them through ``bridge.blocking`` (a thread), never
directly. Errors of any kind (network, refusal, a missing bucket) become
one ``StoreError`` line naming the
endpoint (``StoreUnavailable`` when S3 cannot be reached), so an acceptance
that cannot reach S3 gets ``451`` and the commit that needed the object
does not happen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from postwarden.config import S3Config
from postwarden.storage.interfaces import (
    DatabaseUnusable,
    NotFound,
    StoreError,
    StoreUnavailable,
)

DELETE_BATCH = 1000  # keys per DeleteObjects request: S3's own limit
DIGEST_NAME = re.compile(r"[0-9a-f]{64}")  # what ``key`` puts after the prefix


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class S3Objects:
    """put / get (by range) / delete / list of content-addressed objects; a thread-safe
    client."""

    list_page = 1000  # keys per listing request (S3 gives at most 1000)

    def __init__(self, settings: S3Config) -> None:
        import boto3  # here: its import costs what an SQLite server should not pay
        from botocore.config import Config as BotoConfig

        self.settings = settings
        secret = settings.secret_key
        if settings.secret_key_file is not None:
            try:
                secret = settings.secret_key_file.read_text().splitlines()[0]
            except (OSError, IndexError) as exc:
                raise DatabaseUnusable(
                    f"s3.secret_key_file {settings.secret_key_file}: cannot read it"
                    f" ({_reason(exc)})") from None
        config = BotoConfig(
            connect_timeout=settings.timeout_seconds, read_timeout=settings.timeout_seconds,
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=settings.max_connections,
            s3={"addressing_style": "path"})
        self._client: Any = boto3.session.Session().client(
            "s3", endpoint_url=settings.endpoint, region_name=settings.region,
            aws_access_key_id=settings.access_key or None,
            aws_secret_access_key=secret or None, config=config)
        self._uploads = ThreadPoolExecutor(settings.max_connections,
                                           thread_name_prefix="postwarden-s3")

    def key(self, digest: bytes) -> str:
        return self.settings.prefix + digest.hex()

    def check(self) -> None:
        """At start-up: the bucket is there and ours to use, or one line saying why not."""
        try:
            self._client.head_bucket(Bucket=self.settings.bucket)
        except Exception as exc:
            raise DatabaseUnusable(
                f"s3 bucket {self.settings.bucket} at {self.settings.endpoint}:"
                f" {_reason(exc)}") from None

    def put_many(self, objects: Iterable[tuple[bytes, bytes]]) -> None:
        """Store (digest, bytes) pairs, in parallel; returns when every PUT has completed."""
        jobs = [self._uploads.submit(self._put, digest, data) for digest, data in objects]
        errors = [job.exception() for job in jobs]
        for error in errors:
            if error is not None:
                raise error

    def _put(self, digest: bytes, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.settings.bucket, Key=self.key(digest), Body=data)
        except Exception as exc:
            raise self._failed("PUT", exc) from None

    def get(self, digest: bytes, start: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[start, start+length)`` of an object (to its end without a length)."""
        if length is not None and length <= 0:
            return b""
        end = "" if length is None else str(start + length - 1)
        try:
            reply = self._client.get_object(Bucket=self.settings.bucket, Key=self.key(digest),
                                            Range=f"bytes={start}-{end}")
            return bytes(reply["Body"].read())
        except self._client.exceptions.NoSuchKey:
            raise NotFound(f"object {self.key(digest)} is missing from s3") from None
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") == "InvalidRange":
                return b""  # a range past the end: nothing there, as a file read gives
            raise self._failed("GET", exc) from None

    def delete_many(self, digests: Iterable[bytes]) -> None:
        """Delete objects, up to ``DELETE_BATCH`` per request (S3's DeleteObjects limit);
        an object already gone counts as deleted."""
        keys = [self.key(digest) for digest in digests]
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start:start + DELETE_BATCH]]
            try:
                reply = self._client.delete_objects(
                    Bucket=self.settings.bucket, Delete={"Objects": batch, "Quiet": True})
            except Exception as exc:
                raise self._failed("DELETE", exc) from None
            errors = reply.get("Errors") or []
            if errors:
                first = errors[0]
                raise StoreError(f"s3 DELETE at {self.settings.endpoint}: {first.get('Key')}:"
                                 f" {first.get('Message') or first.get('Code')}")

    def written_before(self, before: float) -> Iterator[list[bytes]]:
        """The digests of the objects last written before ``before`` (a time), a listing
        page (``list_page`` keys) at a time. A key that is not the prefix and a SHA-256
        in hex is not ours: it is never listed, so never deleted."""
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.settings.bucket, Prefix=self.settings.prefix,
            PaginationConfig={"PageSize": self.list_page})
        try:
            for page in pages:
                yield [digest for item in page.get("Contents", [])
                       if item["LastModified"].timestamp() < before
                       and (digest := self._digest(item["Key"])) is not None]
        except Exception as exc:
            raise self._failed("LIST", exc) from None

    def _digest(self, key: str) -> bytes | None:
        name = key.removeprefix(self.settings.prefix)
        return bytes.fromhex(name) if DIGEST_NAME.fullmatch(name) else None

    def _failed(self, what: str, exc: BaseException) -> StoreError:
        """Unreachable, timed out or a 5xx: ``StoreUnavailable`` (try again later, as for
        the database); a refusal (no bucket, no access) is a plain ``StoreError``."""
        from botocore.exceptions import ConnectionError, HTTPClientError

        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        temporary = (isinstance(exc, ConnectionError | HTTPClientError)
                     or (isinstance(status, int) and status >= 500))
        kind = StoreUnavailable if temporary else StoreError
        return kind(f"s3 {what} at {self.settings.endpoint}: {_reason(exc)}")

    def close(self) -> None:
        self._uploads.shutdown(wait=True)
        self._client.close()
