"""Presigned URLs for stored media, built against the address phones reach storage at.

Workers talk to S3 at ``AWS_ENDPOINT_URL`` (on the local stack the sandbox's moto on
127.0.0.1, in a cluster perhaps an internal service name); a phone may not reach that.
``STORAGE_PUBLIC_URL`` is where it can (AWS itself when unset in production, a proxy or CDN
that keeps the Host header, or ``http://10.0.2.2:<port>`` for the Android emulator): URLs
are signed for that host. Signing is local computation: no request is made.
"""

from __future__ import annotations

import time
from functools import lru_cache

import boto3
from botocore.config import Config

from unilingo.settings import Settings, get_settings


def aws_credentials(settings: Settings) -> tuple[str | None, str | None]:
    """The configured keys; unset on the sandbox, which takes any, "sandbox"; else boto3's own chain."""
    key, secret = settings.aws_access_key_id, settings.aws_secret_access_key
    if key is None and settings.aws_endpoint_url is None and settings.unilingo_env != "production":
        return "sandbox", "sandbox"
    return key, secret


@lru_cache
def _signer(endpoint: str | None, region: str, key: str | None, secret: str | None):
    config = Config(region_name=region, signature_version="s3v4", s3={"addressing_style": "path"})
    session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=region)
    return session.client("s3", endpoint_url=endpoint, config=config)


def presigned_get(bucket: str, key: str, settings: Settings | None = None) -> tuple[str, int]:
    """A GET URL for ``bucket/key`` on the public storage address, and when it expires (Unix time)."""
    settings = settings or get_settings()
    ttl = settings.tts_url_ttl_seconds
    access_key, secret = aws_credentials(settings)
    signer = _signer(settings.storage_public_base(), settings.aws_region, access_key, secret)
    url = signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=ttl)
    return url, int(time.time()) + ttl
