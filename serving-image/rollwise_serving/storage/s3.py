"""S3 and S3-compatible stores (MinIO, Ceph, moto) through boto3.

Credentials and region come from boto3's usual chain (``AWS_ACCESS_KEY_ID``... or a role); the
endpoint from ``--s3-endpoint``, else ``AWS_ENDPOINT_URL``, else AWS itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from rollwise_serving.errors import StorageError

SCHEMES = frozenset({"s3"})


def fetch(uri: str, dest: Path, *, endpoint: str | None = None) -> None:
    import boto3  # noqa: PLC0415 - heavy; only S3 users pay for the import
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    parts = urlsplit(uri)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket or not key:
        raise StorageError(f"--model-uri {uri!r}: use s3://BUCKET/KEY")
    client = boto3.client(
        "s3",
        endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    try:
        client.download_file(bucket, key, str(dest))
    except (ClientError, BotoCoreError) as err:
        raise StorageError(
            f"cannot fetch {uri}: {err}; check the bucket, key, endpoint and credentials"
        ) from err
