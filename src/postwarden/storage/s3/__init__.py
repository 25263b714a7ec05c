"""Message bytes in an S3-compatible object store (``[storage] blobs = "s3"``)."""

from postwarden.storage.s3.objects import S3Objects

__all__ = ["S3Objects"]
