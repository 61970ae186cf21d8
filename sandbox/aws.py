"""AWS Polly and S3, served by moto on a port of their own behind the sandbox's gate.

boto3 reaches it with ``endpoint_url="http://127.0.0.1:$SANDBOX_AWS_PORT"``. Every
request is classified by the service named in its SigV4 credential scope (header-signed
or presigned), then counted, exposed to injected faults and delayed by Unilingo v1's Polly
latency (S3: a typical first-byte latency) before moto answers it. Faults answer in each
service's own shape: Polly's ``ThrottlingException`` / ``ServiceFailureException`` JSON,
S3's ``SlowDown`` / ``InternalError`` XML. Requests to other AWS services pass through to
moto uncounted.

Polly's answers are moto's (its validation of voices, formats, lengths and SSML marks),
except the audio: where moto answers a synthesis with eight placeholder bytes, the gateway
puts the real speech of ``sandbox.tts`` in their place, with Polly's
``x-amzn-RequestCharacters``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

from sandbox import tts
from sandbox.gate import HangUp, Refusal
from sandbox.profiles import AWS_POLLY, LATENCIES, STORAGE
from sandbox.runtime import Sandbox, stable_fraction

PROVIDER_BY_SIGNING_NAME = {"polly": AWS_POLLY, "s3": STORAGE}
CREDENTIAL_SCOPE = re.compile(r"[^/\s,]+/\d{8}/[^/]+/([^/]+)/aws4_request")
S3_BYTES_PER_S = 50e6

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]


def provider_of(environ: dict) -> str | None:
    """``aws-polly``, ``storage`` or None, from the SigV4 credential scope's service name.

    Only S3 still takes SigV2 (``Authorization: AWS key:signature``, or a presigned URL with
    ``AWSAccessKeyId``), which boto3 uses for presigned S3 URLs in us-east-1.
    """
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if authorization.startswith("AWS ") or "AWSAccessKeyId" in query:
        return STORAGE
    credential = authorization if "Credential=" in authorization else query.get("X-Amz-Credential", [""])[0]
    match = CREDENTIAL_SCOPE.search(credential)
    return PROVIDER_BY_SIGNING_NAME.get(match.group(1)) if match else None


def _content_length(environ: dict) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _polly_request(environ: dict) -> dict:
    """The synthesis request's JSON; the body is read here and put back for moto."""
    if "sandbox.polly_request" in environ:
        return environ["sandbox.polly_request"]
    length = _content_length(environ)
    body = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        request = {}
    environ["sandbox.polly_request"] = request if isinstance(request, dict) else {}
    return environ["sandbox.polly_request"]


def _polly_text_length(environ: dict) -> int:
    return len(str(_polly_request(environ).get("Text") or ""))


def _is_synthesis(environ: dict) -> bool:
    return environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO", "").endswith("/v1/speech")


@functools.cache
def _polly_voices() -> dict[str, dict]:
    from moto.polly.resources import VOICE_DATA

    return {voice["Id"]: voice for voice in VOICE_DATA}


def with_real_speech(environ: dict, moto_app: WsgiApp, start_response: Callable) -> list[bytes]:
    """moto's answer to a synthesis, its placeholder audio replaced by real speech."""
    answer: dict = {}

    def capture(status: str, headers: list, exc_info=None):
        answer["status"], answer["headers"] = status, headers
        return lambda _data: None

    body = list(moto_app(environ, capture))
    request = _polly_request(environ)
    output_format = request.get("OutputFormat")
    if answer["status"].startswith("200") and output_format in tts.ENCODINGS:
        voice = _polly_voices().get(str(request.get("VoiceId")), {})
        text = str(request.get("Text") or "")
        audio = tts.synthesize(
            text,
            ssml=request.get("TextType") == "ssml",
            language_code=str(request.get("LanguageCode") or voice.get("LanguageCode") or "en-US"),
            gender=str(voice.get("Gender") or ""),
            output_format=output_format,
            rate=tts.sample_rate(output_format, request.get("SampleRate"), request.get("Engine")),
        )
        headers = [(name, value) for name, value in answer["headers"] if name.lower() != "content-length"]
        answer["headers"] = [
            *headers,
            ("x-amzn-RequestCharacters", str(len(text))),
            ("Content-Length", str(len(audio))),
        ]
        body = [audio]
    start_response(answer["status"], answer["headers"])
    return body


def real_latency(provider: str, environ: dict) -> float:
    if provider == AWS_POLLY:
        if environ.get("PATH_INFO", "").endswith("/speech"):
            # Synthesis: a start-up cost, then about 230 characters of text a second.
            return LATENCIES[AWS_POLLY].clamp(2.0 + _polly_text_length(environ) / 230)
        return 0.05  # voices and lexicons are metadata look-ups
    jitter = 0.05 * stable_fraction(environ.get("PATH_INFO"), environ.get("REQUEST_METHOD"))
    return LATENCIES[STORAGE].clamp(0.03 + jitter + _content_length(environ) / S3_BYTES_PER_S)


def refusal_answer(refusal: Refusal, start_response: Callable) -> list[bytes]:
    request_id = str(uuid.uuid4())
    retry_after = str(refusal.retry_after_s or 1)
    if refusal.provider == AWS_POLLY:
        throttled = refusal.status == 429
        code = "ThrottlingException" if throttled else "ServiceFailureException"
        message = "Rate exceeded" if throttled else "An unknown condition has caused a service failure."
        # AWS answers throttling with a 400 and the error type; botocore reads the header.
        status = "400 Bad Request" if throttled else "500 Internal Server Error"
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", code), ("x-amzn-RequestId", request_id)]
    else:
        throttled = refusal.status == 429
        code = "SlowDown" if throttled else "InternalError"
        message = (
            "Please reduce your request rate." if throttled else "We encountered an internal error. Please try again."
        )
        status = "503 Slow Down" if throttled else "500 Internal Server Error"
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>{request_id}</RequestId><HostId>sandbox</HostId></Error>"
        ).encode()
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
    if throttled:
        headers.append(("Retry-After", retry_after))
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return [body]


class AwsGateway:
    """WSGI middleware in front of moto: stats, faults and latency for Polly and S3."""

    def __init__(self, moto_app: WsgiApp, sandbox: Sandbox) -> None:
        self._moto_app = moto_app
        self._sandbox = sandbox

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        provider = provider_of(environ)
        if provider is None:
            return self._moto_app(environ, start_response)
        gate = self._sandbox.gate
        gate.arrive(provider)
        latency_s = self._sandbox.scaled(real_latency(provider, environ))
        try:
            ticket = gate.admit(provider, expected_s=latency_s)
        except Refusal as refusal:
            return refusal_answer(refusal, start_response)
        except HangUp as hang_up:
            time.sleep(hang_up.hold_s)
            _drop_connection(environ)
        with ticket:
            started = time.monotonic()
            # Materialise moto's answer inside the slot, so concurrency covers the whole call;
            # synthesis takes its time out of the provider's latency, not on top of it.
            if provider == AWS_POLLY and _is_synthesis(environ):
                answer = with_real_speech(environ, self._moto_app, start_response)
            else:
                answer = list(self._moto_app(environ, start_response))
            time.sleep(max(0.0, latency_s + ticket.extra_delay_s - (time.monotonic() - started)))
            return answer


def _drop_connection(environ: dict) -> None:
    """Close the client's socket without an answer (werkzeug then treats it as dropped)."""
    connection = environ.get("werkzeug.socket")
    if connection is not None:
        with contextlib.suppress(OSError):  # the client may have gone already
            connection.shutdown(socket.SHUT_RDWR)
    raise ConnectionAbortedError("sandbox: timeout fault hung up on the client")


class AwsServer:
    """moto's server for every AWS service, in a thread, on its own port."""

    def __init__(self, sandbox: Sandbox, host: str, port: int) -> None:
        self._sandbox = sandbox
        self._host = host
        self._port = port
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        # moto takes a second to import: only when the AWS side is wanted.
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        app = AwsGateway(DomainDispatcherApplication(create_backend_app), self._sandbox)
        self._server = make_server(self._host, self._port, app, threaded=True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox-aws", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
