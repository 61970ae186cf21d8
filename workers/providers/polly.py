"""Text to speech with AWS Polly, the audio kept in S3 and handed out as a presigned URL.

Both through ``boto3`` with its own retries off: a throttle must pause the provider for every
worker and defer the job (``Throttled``), not spin inside one worker. ``AWS_ENDPOINT_URL``
points both clients at the sandbox's moto server by default (``""``: AWS itself, with
boto3's usual credential chain). Polly and the upload are separate provider calls, each
under its own permit: ``aws-polly`` and ``storage``.

Error mapping (botocore): ``ThrottlingException``/``SlowDown``/429 → ``Throttled``; 5xx,
``ServiceFailureException``, connection errors and timeouts → ``TransientError``; the
request's own faults (text too long, invalid SSML, unknown voice...) → ``PermanentError``.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from unilingo import storage
from unilingo.errors import PermanentError, Throttled, TransientError
from unilingo.settings import get_settings
from workers.providers import sent

POLLY = "aws-polly"
STORAGE = "storage"

# A standard-engine voice per language (all also exist as neural voices, except Mizuki).
VOICES = {
    "en-US": "Joanna",
    "en-GB": "Amy",
    "en-AU": "Nicole",
    "en-IN": "Raveena",
    "es-ES": "Lucia",
    "es-MX": "Mia",
    "es-US": "Lupe",
    "fr-FR": "Lea",
    "fr-CA": "Chantal",
    "de-DE": "Vicki",
    "it-IT": "Bianca",
    "pt-BR": "Camila",
    "pt-PT": "Ines",
    "ja-JP": "Mizuki",
    "ko-KR": "Seoyeon",
    "cmn-CN": "Zhiyu",
    "nl-NL": "Lotte",
    "pl-PL": "Ewa",
    "ru-RU": "Tatyana",
    "sv-SE": "Astrid",
    "tr-TR": "Filiz",
    "da-DK": "Naja",
    "nb-NO": "Liv",
    "ro-RO": "Carmen",
    "arb": "Zeina",
    "cy-GB": "Gwyneth",
    "is-IS": "Dora",
}
# What a bare language code means.
DEFAULT_LOCALE = {
    "en": "en-US",
    "es": "es-ES",
    "fr": "fr-FR",
    "de": "de-DE",
    "it": "it-IT",
    "pt": "pt-BR",
    "ja": "ja-JP",
    "ko": "ko-KR",
    "zh": "cmn-CN",
    "cmn": "cmn-CN",
    "nl": "nl-NL",
    "pl": "pl-PL",
    "ru": "ru-RU",
    "sv": "sv-SE",
    "tr": "tr-TR",
    "da": "da-DK",
    "nb": "nb-NO",
    "no": "nb-NO",
    "ro": "ro-RO",
    "ar": "arb",
    "cy": "cy-GB",
    "is": "is-IS",
}
CONTENT_TYPES = {"mp3": "audio/mpeg", "ogg_vorbis": "audio/ogg", "pcm": "audio/pcm"}
EXTENSIONS = {"mp3": "mp3", "ogg_vorbis": "ogg", "pcm": "pcm"}

_THROTTLE_CODES = {"ThrottlingException", "Throttling", "TooManyRequestsException", "SlowDown", "RequestLimitExceeded"}
_TRANSIENT_CODES = {
    "ServiceFailureException",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
}


def voice_for(language: str | None, voice: str | None = None) -> tuple[str, str]:
    """(voice id, language code) for a request: the named voice, or the language's default."""
    code = (language or "en-US").strip()
    if "-" in code:
        head, _, tail = code.partition("-")
        code = f"{head.lower()}-{tail.upper()}"
    else:
        code = DEFAULT_LOCALE.get(code.lower(), code)
    if voice:
        return voice, code
    if code not in VOICES:
        raise PermanentError(f"no voice for language {language!r}; name one with 'voice'", code="unsupported_language")
    return VOICES[code], code


def is_ssml(text: str) -> bool:
    return text.lstrip().startswith("<speak")


@lru_cache
def _clients(endpoint: str | None, region: str, key: str | None, secret: str | None, timeout: float):
    config = Config(
        region_name=region,
        retries={"total_max_attempts": 1},
        connect_timeout=min(5.0, timeout),
        read_timeout=timeout,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
    )
    session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=region)
    polly, s3 = (session.client(name, endpoint_url=endpoint, config=config) for name in ("polly", "s3"))
    for client in (polly, s3):
        client.meta.events.register("before-send", sent.botocore_hook)
    return polly, s3


def clients():
    settings = get_settings()
    key, secret = storage.aws_credentials(settings)
    return _clients(settings.aws_endpoint(), settings.aws_region, key, secret, settings.aws_timeout_seconds)


def _map(provider: str, exc: Exception, what: str) -> Exception:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        message = error.get("Message") or code
        # S3 answers 503 only to say "reduce your request rate" (SlowDown); a HEAD carries no code.
        if code in _THROTTLE_CODES or status == 429 or (provider == STORAGE and status == 503):
            retry_after = (meta.get("HTTPHeaders") or {}).get("retry-after")
            try:
                wait = max(1.0, float(retry_after))
            except (TypeError, ValueError):
                wait = 1.0
            return Throttled(provider, wait, "provider_429")
        if code in _TRANSIENT_CODES or status >= 500:
            return TransientError(f"{what} failed ({status} {code}): {message}", code="provider_error")
        if code == "TextLengthExceededException":
            return PermanentError(f"the text is longer than Polly takes: {message}", code="text_too_long")
        if code in ("InvalidSsmlException", "SsmlMarksNotSupportedForTextTypeException"):
            return PermanentError(f"invalid SSML: {message}", code="invalid_ssml")
        return PermanentError(f"{what} refused ({status} {code}): {message}", code="provider_bad_request")
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
        return TransientError(f"{what} timed out: {exc}", code="provider_timeout")
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError)):
        return TransientError(f"{what} unreachable: {exc}", code="provider_unavailable")
    return TransientError(f"{what} failed: {exc}", code="provider_unavailable")


def synthesize(ctx, text: str, voice: str, language: str) -> tuple[bytes, str]:
    """Audio bytes and their content type, under an ``aws-polly`` permit."""
    settings = get_settings()
    polly, _ = clients()
    fmt = settings.polly_output_format
    request = {
        "Text": text,
        "TextType": "ssml" if is_ssml(text) else "text",
        "VoiceId": voice,
        "OutputFormat": fmt,
        "Engine": settings.polly_engine,
    }
    with ctx.provider_call(POLLY) as permit:
        try:
            with sent.measured(permit):
                response = polly.synthesize_speech(**request)
            with response["AudioStream"] as stream:
                audio = stream.read()
        except (ClientError, BotoCoreError) as exc:
            raise _map(POLLY, exc, "Polly synthesis") from exc
        permit.tokens_used = int(response.get("RequestCharacters") or len(text))
    return audio, response.get("ContentType") or CONTENT_TYPES.get(fmt, "application/octet-stream")


_buckets_ready: set[tuple[str | None, str]] = set()
_buckets_lock = threading.Lock()


def _ensure_bucket(s3, bucket: str) -> None:
    """Create the bucket on first use in this process (an existing one is fine)."""
    settings = get_settings()
    marker = (settings.aws_endpoint(), bucket)
    if marker in _buckets_ready:
        return
    with _buckets_lock:
        if marker in _buckets_ready:
            return
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            kwargs = {"Bucket": bucket}
            if settings.aws_region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.aws_region}
            try:
                s3.create_bucket(**kwargs)
            except ClientError as create_exc:
                if create_exc.response.get("Error", {}).get("Code") not in (
                    "BucketAlreadyOwnedByYou",
                    "BucketAlreadyExists",
                ):
                    raise
        _buckets_ready.add(marker)


def store(ctx, key: str, audio: bytes, content_type: str, bucket: str | None = None) -> dict:
    """Upload to S3 (the TTS bucket unless named) under a ``storage`` permit; a presigned GET URL."""
    settings = get_settings()
    _, s3 = clients()
    bucket = bucket or settings.tts_bucket
    with ctx.provider_call(STORAGE) as permit:
        try:
            with sent.measured(permit):
                _ensure_bucket(s3, bucket)
                s3.put_object(Bucket=bucket, Key=key, Body=audio, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise _map(STORAGE, exc, "upload to storage") from exc
    url, expires_at = storage.presigned_get(bucket, key)  # for the address phones reach storage at
    return {"audio_url": url, "expires_at": expires_at, "bucket": bucket, "key": key}
