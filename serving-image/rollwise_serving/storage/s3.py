"""S3 and S3-compatible stores (MinIO, Ceph, moto) through boto3.

Credentials and region come from boto3's usual chain (``AWS_ACCESS_KEY_ID``... or a role); the
endpoint from ``--s3-endpoint``, else ``AWS_ENDPOINT_URL``, else AWS itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from rollwise_contract.redact import redact_uri

from rollwise_serving.errors import ArtifactTooLargeError, StorageError

SCHEMES = frozenset({"s3"})


def fetch(uri: str, dest: Path, *, max_bytes: int, endpoint: str | None = None) -> None:
    import boto3  # noqa: PLC0415 - heavy; only S3 users pay for the import
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    parts = urlsplit(uri)
    shown = redact_uri(uri)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket or not key:
        raise StorageError(f"--model-uri {shown!r}: use s3://BUCKET/KEY")
    client = boto3.client(
        "s3",
        endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    try:
        # One streamed GET rather than download_file's parallel ranges: the bytes are counted as
        # they arrive, so the download stops at --max-model-bytes whatever the store claims.
        obj = client.get_object(Bucket=bucket, Key=key)
        if int(obj.get("ContentLength") or 0) > max_bytes:
            obj["Body"].close()
            raise ArtifactTooLargeError(shown, max_bytes)
        size = 0
        with dest.open("wb") as out:
            for chunk in obj["Body"].iter_chunks(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    obj["Body"].close()
                    raise ArtifactTooLargeError(shown, max_bytes)
                out.write(chunk)
    except (ClientError, BotoCoreError) as err:
        raise StorageError(
            f"cannot fetch {shown}: {err}; check the bucket, key, endpoint and credentials"
        ) from err


@dataclass(frozen=True, slots=True)
class S3Object:
    uri: str
    key: str
    """The key below the listed prefix."""
    size: int
    etag: str


def list_objects(uri: str, *, endpoint: str | None = None) -> list[S3Object]:
    """Every object under ``s3://BUCKET/PREFIX``, by key (a batch job's input: a prefix, as
    Spark and Hive write datasets). Raises ``StorageError`` naming the prefix."""
    import boto3  # noqa: PLC0415 - heavy; only S3 users pay for the import
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    parts = urlsplit(uri)
    shown = redact_uri(uri)
    bucket, prefix = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket:
        raise StorageError(f"--input {shown!r}: use s3://BUCKET/PREFIX")
    client = boto3.client(
        "s3",
        endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    found = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                found.append(
                    S3Object(
                        f"s3://{bucket}/{quote(key)}",
                        key[len(prefix) :].lstrip("/") or Path(key).name,
                        int(obj["Size"]),
                        str(obj.get("ETag", "")),
                    )
                )
    except (ClientError, BotoCoreError) as err:
        raise StorageError(
            f"cannot list {shown}: {err}; check the bucket, prefix, endpoint and credentials"
        ) from err
    return sorted(found, key=lambda o: o.key)
