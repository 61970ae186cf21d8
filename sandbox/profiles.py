"""What Unilingo v1 measured of each provider: quotas and latencies, in one place.

The figures come from Unilingo v1's architecture report. Where it gives
none, the provider's own published figure is used and marked as such. Latencies are the
real ones; the sandbox multiplies them by its latency scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

OPENAI = "openai"
AZURE_SPEECH = "azure-speech"
AZURE_VISION = "azure-vision"
AWS_POLLY = "aws-polly"
STORAGE = "storage"

PROVIDERS: tuple[str, ...] = (OPENAI, AZURE_SPEECH, AZURE_VISION, AWS_POLLY, STORAGE)


def _known_provider(value: str) -> str:
    if value not in PROVIDERS:
        raise ValueError(f"unknown provider {value!r}; one of {', '.join(PROVIDERS)}")
    return value


# A provider named in a control request (faults, quotas): one of the sandbox's, or a 422.
KnownProvider = Annotated[str, AfterValidator(_known_provider)]


@dataclass(frozen=True)
class Quota:
    """Limits a provider enforces; ``None`` means the provider has no such limit."""

    requests_per_window: int | None = None
    tokens_per_window: int | None = None
    window_s: float = 60.0
    max_concurrent: int | None = None


@dataclass(frozen=True)
class LatencyRange:
    """Real seconds a call takes, before the latency scale is applied."""

    low_s: float
    high_s: float

    def clamp(self, seconds: float) -> float:
        return min(self.high_s, max(self.low_s, seconds))


QUOTAS: dict[str, Quota] = {
    # Unilingo v1: "50 req/min, 75k tokens/min" (GPT-4o-mini).
    OPENAI: Quota(requests_per_window=50, tokens_per_window=75_000, window_s=60.0),
    # Unilingo v1: "Max 20 concurrent".
    AZURE_SPEECH: Quota(max_concurrent=20),
    # Not in Unilingo v1's report: Azure AI Vision's free tier (F0) allows 20 calls per minute, and on
    # that tier polling the Read result counts as a call too.
    AZURE_VISION: Quota(requests_per_window=20, window_s=60.0),
    AWS_POLLY: Quota(),
    STORAGE: Quota(),
}

LATENCIES: dict[str, LatencyRange] = {
    OPENAI: LatencyRange(5.0, 30.0),  # Unilingo v1: GPT-4o-mini "5-30s/request"
    AZURE_SPEECH: LatencyRange(2.0, 10.0),  # Unilingo v1: "2-10s/request"
    AZURE_VISION: LatencyRange(1.0, 3.0),  # Unilingo v1: OCR "1-3s/request"
    AWS_POLLY: LatencyRange(2.0, 15.0),  # Unilingo v1: Polly "2-15s/req"
    STORAGE: LatencyRange(0.03, 0.5),  # not in Unilingo v1's report: typical S3 first-byte latency
}


@dataclass(frozen=True)
class ChatModel:
    """An OpenAI model as the sandbox knows it: context window and output cap, in tokens."""

    id: str
    context_window: int
    max_output_tokens: int
    created: int


CHAT_MODELS: dict[str, ChatModel] = {
    model.id: model
    for model in (
        ChatModel("gpt-4o-mini", 128_000, 16_384, 1721172741),
        ChatModel("gpt-4o", 128_000, 16_384, 1715367049),
        ChatModel("gpt-4.1", 1_047_576, 32_768, 1744316542),
        ChatModel("gpt-4.1-mini", 1_047_576, 32_768, 1744318173),
        ChatModel("gpt-4.1-nano", 1_047_576, 32_768, 1744321707),
        ChatModel("gpt-5", 400_000, 128_000, 1754425777),
        ChatModel("gpt-5-mini", 400_000, 128_000, 1754425928),
        ChatModel("gpt-5-nano", 400_000, 128_000, 1754426384),
    )
}


def find_chat_model(model_id: str) -> ChatModel | None:
    """A known model, also under a dated snapshot name such as ``gpt-4o-mini-2024-07-18``."""
    if model_id in CHAT_MODELS:
        return CHAT_MODELS[model_id]
    base, _, snapshot = model_id.rpartition("-20")
    return CHAT_MODELS.get(base) if base and snapshot[:2].isdigit() else None
