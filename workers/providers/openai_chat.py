"""Structured chat completions through the official ``openai`` SDK.

The SDK's own retries are off: a 429 must pause the provider for every worker and defer the
job (``Throttled``), not spin inside one worker holding a slot. ``OPENAI_BASE_URL`` points it
at any OpenAI-compatible server: the sandbox here, vLLM or Ollama elsewhere.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TypeVar

import openai
from pydantic import BaseModel, ValidationError

from unilingo.adaptive import RateLimits
from unilingo.errors import PermanentError, Throttled, TransientError
from unilingo.settings import get_settings
from workers.providers import sent

PROVIDER = "openai"
Model = TypeVar("Model", bound=BaseModel)


@lru_cache
def client() -> openai.OpenAI:
    settings = get_settings()
    return openai.OpenAI(
        base_url=settings.openai_endpoint(),
        api_key=settings.openai_api_key,
        max_retries=0,
        timeout=openai.Timeout(120.0, connect=5.0),
        http_client=openai.DefaultHttpxClient(event_hooks={"request": [sent.httpx_hook]}),
    )


def estimate_tokens(messages: list[dict], max_output_tokens: int) -> int:
    """What the provider's limiter will charge: the prompt (≈4 chars a token) plus the cap."""
    prompt_chars = sum(len(m["content"]) for m in messages)
    return prompt_chars // 4 + 8 * len(messages) + max_output_tokens


def _retry_after(exc: openai.APIStatusError) -> float:
    value = exc.response.headers.get("retry-after")
    try:
        return max(1.0, float(value))
    except (TypeError, ValueError):
        return 1.0


def complete_structured(
    ctx, messages: list[dict], schema: type[Model], name: str, max_output_tokens: int | None = None
) -> Model:
    settings = get_settings()
    cap = max_output_tokens or settings.openai_max_output_tokens
    # Everything slow to build is built before the permit: its minute starts when granted.
    openai_client = client()
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": _strict_schema(schema), "strict": True},
    }
    with ctx.provider_call(PROVIDER, tokens=estimate_tokens(messages, cap)) as permit:
        try:
            with sent.measured(permit):
                # The raw response: its x-ratelimit-* headers say what the account allows.
                raw = openai_client.chat.completions.with_raw_response.create(
                    model=settings.openai_model, messages=messages, max_tokens=cap, response_format=response_format
                )
            permit.rate_limits = RateLimits.from_headers(raw.headers)
            response = raw.parse()
        except openai.APIStatusError as exc:
            # 429s and errors carry the headers too: a 429 is when they matter most.
            permit.rate_limits = RateLimits.from_headers(exc.response.headers)
            raise _status_error(exc) from exc
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise TransientError(f"OpenAI unreachable: {exc}", code="provider_unavailable") from exc
        if response.usage is not None:
            permit.tokens_used = response.usage.total_tokens
            permit.input_tokens = response.usage.prompt_tokens  # billed at the policy's prices
            permit.output_tokens = response.usage.completion_tokens
    content = response.choices[0].message.content or ""
    try:
        return schema.model_validate_json(content)
    except ValidationError as exc:
        # A model that ignores the schema is a provider fault worth retrying.
        raise TransientError(
            f"OpenAI's answer did not match the schema: {exc.error_count()} errors", code="provider_bad_output"
        ) from exc


def _status_error(exc: openai.APIStatusError) -> Exception:
    """What an error answer means for the job: wait for everyone, retry, or fail."""
    if isinstance(exc, openai.RateLimitError):
        return Throttled(PROVIDER, _retry_after(exc), "provider_429")
    if isinstance(exc, openai.InternalServerError):
        return TransientError(f"OpenAI answered {exc.status_code}", code="provider_error")
    if isinstance(exc, openai.BadRequestError):
        return PermanentError(f"OpenAI refused the request: {exc.message}", code="provider_bad_request")
    return PermanentError(f"OpenAI answered {exc.status_code}: {exc.message}", code="provider_rejected")


def _strict_schema(schema: type[BaseModel]) -> dict:
    """OpenAI's strict mode wants every property required and no extra properties."""

    def fix(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["required"] = list(node["properties"])
                node["additionalProperties"] = False
            for value in node.values():
                fix(value)
        elif isinstance(node, list):
            for value in node:
                fix(value)
        return node

    return fix(schema.model_json_schema())
