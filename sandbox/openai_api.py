"""OpenAI's chat completions API, served under ``/openai/v1`` for the real ``openai`` SDK.

Faithful where clients depend on it: bearer auth, OpenAI's request validation and error
JSON, the 50 requests / 75,000 tokens per minute quota charged the way OpenAI's limiter
charges (prompt characters / 4 + ``max_tokens`` per choice), ``x-ratelimit-*`` headers on
every answer, ``Retry-After`` on 429s, structured outputs that validate against the
caller's JSON schema, and Unilingo v1's 5-30 s latency. Requests are validated by
``sandbox.openai_requests``; the answer's content comes from ``sandbox.content``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from sandbox.content import Topic, estimate_tokens, instance_for_schema, json_object_answer, text_answer
from sandbox.gate import Refusal, Ticket
from sandbox.openai_requests import ChatRequest, InvalidRequest, parse_chat_request
from sandbox.profiles import CHAT_MODELS, LATENCIES, OPENAI, QUOTAS, ChatModel, find_chat_model
from sandbox.quotas import QuotaState
from sandbox.runtime import Sandbox, stable_fraction

# gpt-4o-mini writes on the order of 100-150 tokens a second once it has started.
TOKENS_PER_SECOND = 150.0


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# ---------------------------------------------------------------- the answer


@dataclass
class Choice:
    content: str | None
    tool_call: dict | None
    finish_reason: str
    completion_tokens: int


def compose_choices(request: ChatRequest) -> list[Choice]:
    topic = Topic.from_prompt(request.instructions, request.request_text)
    choices = []
    for index in range(request.n):
        seed = int(stable_fraction(request.instructions, request.request_text, request.seed, index) * 2**32)
        if request.forced_tool is not None:
            parameters = request.forced_tool.get("parameters") or {"type": "object", "properties": {}}
            arguments = json.dumps(instance_for_schema(parameters, topic, seed), ensure_ascii=False)
            tool_call = {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": request.forced_tool["name"], "arguments": arguments},
            }
            choices.append(Choice(None, tool_call, "tool_calls", estimate_tokens(arguments)))
            continue
        text = _content(request, topic, seed)
        tokens = estimate_tokens(text)
        if request.max_tokens is not None and tokens > request.max_tokens:
            # As the real model does: stop mid-answer (and mid-JSON) at the cap.
            text, tokens = text[: request.max_tokens * 4], request.max_tokens
            choices.append(Choice(text, None, "length", tokens))
        else:
            choices.append(Choice(text, None, "stop", tokens))
    return choices


def _content(request: ChatRequest, topic: Topic, seed: int) -> str:
    response_format = request.response_format or {}
    if response_format.get("type") == "json_schema":
        value = instance_for_schema(response_format["json_schema"]["schema"], topic, seed)
        return json.dumps(value, ensure_ascii=False)
    if response_format.get("type") == "json_object":
        return json.dumps(json_object_answer(topic, request.request_text, seed), ensure_ascii=False)
    return text_answer(topic)


def real_latency(request: ChatRequest, choices: list[Choice]) -> float:
    """Seconds the real model would take: a start-up cost, then writing speed, plus jitter."""
    longest = max(choice.completion_tokens for choice in choices)
    jitter = 4.0 * stable_fraction("latency", request.instructions, request.request_text)
    return LATENCIES[OPENAI].clamp(LATENCIES[OPENAI].low_s + longest / TOKENS_PER_SECOND + jitter)


def usage(request: ChatRequest, choices: list[Choice]) -> dict:
    # Chat formatting costs a few tokens per message on top of the text.
    prompt_tokens = request.prompt_estimate + 3 * len(request.messages) + 3
    completion_tokens = sum(choice.completion_tokens for choice in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def completion_body(request: ChatRequest, choices: list[Choice], completion_id: str, created: int) -> dict:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": request.model_id,
        "choices": [
            {
                "index": index,
                "message": {
                    "role": "assistant",
                    "content": choice.content,
                    "refusal": None,
                    "annotations": [],
                    **({"tool_calls": [choice.tool_call]} if choice.tool_call else {}),
                },
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
            for index, choice in enumerate(choices)
        ],
        "usage": usage(request, choices),
        "service_tier": "default",
        "system_fingerprint": "fp_sandbox",
    }


# ---------------------------------------------------------------- headers and errors


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``120ms``, ``17.4s``, ``1m0s``."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"


def rate_limit_headers(state: QuotaState | None) -> dict[str, str]:
    headers = {}
    if state is None:
        return headers
    for name, window in (("requests", state.requests), ("tokens", state.tokens)):
        if window is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(window.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(window.remaining)
            headers[f"x-ratelimit-reset-{name}"] = _duration(window.reset_s)
    return headers


def _json(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def invalid_request_response(error: InvalidRequest, state: QuotaState | None = None) -> Response:
    body = error_body(error.message, "invalid_request_error", error.param, error.code)
    return _json(body, error.status, rate_limit_headers(state))


def refusal_response(refusal: Refusal) -> Response:
    """OpenAI's 429 (with the headers its SDK reads) or 500 for a refused call.

    Both carry the account's ``x-ratelimit-*`` headers, as OpenAI's answers all do."""
    state = refusal.quota_state
    if refusal.status != 429:
        body = error_body("The server had an error while processing your request. Sorry about that!", "server_error")
        return _json(body, refusal.status, rate_limit_headers(state))
    window_s = int(QUOTAS[OPENAI].window_s)
    retry_after = refusal.retry_after_s or window_s
    # The limits of the account being played (POST /_sandbox/quotas), not the defaults.
    tokens_limit = state.tokens.limit if state and state.tokens else 0
    requests_limit = state.requests.limit if state and state.requests else 0
    if refusal.reason == "tokens" and refusal.retry_after_s is None:
        message = (
            f"Request too large in organization org-sandbox on tokens per min (TPM): Limit "
            f"{tokens_limit}, Requested {refusal.tokens}. The input or output tokens must be "
            "reduced in order to run successfully."
        )
        kind = "tokens"
    elif refusal.reason == "tokens":
        used = state.tokens.limit - state.tokens.remaining if state and state.tokens else 0
        message = (
            f"Rate limit reached in organization org-sandbox on tokens per min (TPM): Limit {tokens_limit}, "
            f"Used {used}, Requested {refusal.tokens}. Please try again in {retry_after}s."
        )
        kind = "tokens"
    else:
        used = state.requests.limit - state.requests.remaining if state and state.requests else 0
        message = (
            f"Rate limit reached in organization org-sandbox on requests per min (RPM): Limit "
            f"{requests_limit}, Used {used}, Requested 1. Please try again in {retry_after}s."
        )
        kind = "requests"
    headers = {"retry-after": str(retry_after), **rate_limit_headers(state)}
    return _json(error_body(message, kind, None, "rate_limit_exceeded"), 429, headers)


def _unauthorized() -> Response:
    message = (
        "You didn't provide an API key. You need to provide your API key in an Authorization header using "
        "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
    )
    return _json(error_body(message, "invalid_request_error"), 401)


def _authorized(request: Request) -> bool:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(key.strip())


# ---------------------------------------------------------------- routes


def create_router(sandbox: Sandbox) -> APIRouter:
    router = APIRouter(prefix="/openai/v1")

    @router.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        sandbox.gate.arrive(OPENAI)
        if not _authorized(request):
            return _unauthorized()
        # An authenticated caller's every answer states the account's limits, bad requests too.
        account = sandbox.gate.quotas[OPENAI].state
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _json(error_body(UNPARSABLE_BODY, "invalid_request_error"), 400, rate_limit_headers(account()))
        try:
            chat = parse_chat_request(body)
        except InvalidRequest as error:
            return invalid_request_response(error, account())

        choices = compose_choices(chat)
        latency_s = sandbox.scaled(real_latency(chat, choices))
        started = time.monotonic()
        ticket = sandbox.gate.admit(OPENAI, tokens=chat.quota_cost, expected_s=latency_s)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:29]}"
        created = int(time.time())
        headers = {**rate_limit_headers(ticket.quota_state), "x-request-id": f"req_{uuid.uuid4().hex}"}
        if chat.stream:
            return StreamingResponse(
                _stream(chat, choices, completion_id, created, ticket, latency_s + ticket.extra_delay_s),
                media_type="text/event-stream",
                headers=headers,
                # Also frees the slot of a stream whose client left before it began.
                background=BackgroundTask(ticket.release),
            )
        with ticket:
            await asyncio.sleep(latency_s + ticket.extra_delay_s)
        headers["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000))
        return _json(completion_body(chat, choices, completion_id, created), headers=headers)

    @router.get("/models")
    async def list_models(request: Request) -> Response:
        if not _authorized(request):
            return _unauthorized()
        return _json({"object": "list", "data": [_model_entry(model) for model in CHAT_MODELS.values()]})

    @router.get("/models/{model_id}")
    async def retrieve_model(model_id: str, request: Request) -> Response:
        if not _authorized(request):
            return _unauthorized()
        model = find_chat_model(model_id)
        if model is None:
            message = f"The model '{model_id}' does not exist"
            return _json(error_body(message, "invalid_request_error", "model", "model_not_found"), 404)
        return _json({**_model_entry(model), "id": model_id})

    return router


UNPARSABLE_BODY = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
)


async def _stream(
    chat: ChatRequest, choices: list[Choice], completion_id: str, created: int, ticket: Ticket, total_s: float
):
    """Server-sent chunks as OpenAI streams them; the slot is held until the last one."""

    def chunk(choices_part: list[dict], usage_part: dict | None = None) -> bytes:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": chat.model_id,
            "system_fingerprint": "fp_sandbox",
            "choices": choices_part,
        }
        if chat.include_usage:
            body["usage"] = usage_part
        return b"data: " + orjson.dumps(body) + b"\n\n"

    with ticket:
        pieces = [
            (index, choice.content[start : start + 64])
            for index, choice in enumerate(choices)
            if choice.content
            for start in range(0, len(choice.content), 64)
        ]
        # Time to first token is about a fifth of the call; the rest is spread over the pieces.
        await asyncio.sleep(total_s * 0.2)
        step_s = total_s * 0.8 / max(1, len(pieces))
        for index, _ in enumerate(choices):
            yield chunk(
                [
                    {
                        "index": index,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        for index, piece in pieces:
            yield chunk([{"index": index, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}])
            await asyncio.sleep(step_s)
        for index, choice in enumerate(choices):
            delta = {"tool_calls": [{"index": 0, **choice.tool_call}]} if choice.tool_call else {}
            yield chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": choice.finish_reason}])
        if chat.include_usage:
            yield chunk([], usage(chat, choices))
        yield b"data: [DONE]\n\n"


def _model_entry(model: ChatModel) -> dict:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": "system"}
