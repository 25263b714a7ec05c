"""Objects in one S3 bucket, named by the SHA-256 of their bytes.

boto3 is the client: AWS's own, kept in step with the S3 API, and the one
moto (the S3 server the tests run on loopback) is built around, so the
tests speak to the server exactly as production does. It is imported only
when a configuration asks for S3. Every call blocks: callers run on the
store's threads, never on the event loop. Errors of any kind (network,
refusal, a missing bucket) become one ``StoreError`` line naming the
endpoint (``StoreUnavailable`` when S3 cannot be reached), so an acceptance
that cannot reach S3 gets ``451`` and the commit that needed the object
does not happen.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from postwarden.config import S3Config
from postwarden.storage.interfaces import (
    DatabaseUnusable,
    NotFound,
    StoreError,
    StoreUnavailable,
)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class S3Objects:
    """put / get (by range) / delete of content-addressed objects; a thread-safe client."""

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
        for digest in digests:
            try:
                self._client.delete_object(Bucket=self.settings.bucket, Key=self.key(digest))
            except Exception as exc:
                raise self._failed("DELETE", exc) from None

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
