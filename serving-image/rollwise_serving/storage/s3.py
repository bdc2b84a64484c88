"""S3 and S3-compatible stores (MinIO, Ceph, moto) through boto3.

Credentials and region come from boto3's usual chain (``AWS_ACCESS_KEY_ID``... or a role); the
endpoint from ``--s3-endpoint``, else ``AWS_ENDPOINT_URL``, else AWS itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

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
