"""Provider policy: the limits a provider is called under, and their store in Redis.

One ``ProviderPolicy`` document per provider says how hard every worker together may press
that provider: requests and tokens per minute, how many of them may arrive at once (burst),
how many calls may be in flight, when the shared circuit breaker opens, how calls are
retried, whether the provider is suspended, and whether the limits adapt to what the provider
says the account allows (``adaptive``: ``unilingo.adaptive``). Its JSON form (camelCase) is also the
``spec`` of the ``UnilingoProviderPolicy`` CRD, so the model doubles as the CRD's schema
(``policy_json_schema``).

Defaults are Unilingo v1's figures (the v1 architecture report); where the
report is silent the provider's own published quota is used, and the comment says which.

``PolicyStore`` keeps one document per provider in Redis under a global revision that only
grows. A write is one Lua script: it takes the next revision, stores the document beside the
flat fields the limiter reads, and announces the change on ``keys.policy_channel()``. The
limiter reads those fields inside its own scripts, on every decision, so a new revision is in
force on the very next decision of every process: there is no cache to invalidate.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, NamedTuple, get_args

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator
from pydantic.alias_generators import to_camel

from unilingo import backoff, keys
from unilingo.scripts import lua

Provider = Literal["openai", "azure-speech", "azure-vision", "aws-polly", "storage"]
PROVIDERS: tuple[str, ...] = get_args(Provider)


class _Document(BaseModel):
    """camelCase in JSON (the CRD's convention), snake_case in Python; immutable; strict keys."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",  # a misspelt field is an error, not a silently ignored limit
        frozen=True,
    )


class BreakerPolicy(_Document):
    """The provider's circuit breaker, shared by every worker."""

    failure_threshold: int = Field(
        5, ge=1, le=1000, description="Consecutive failed calls that open the breaker (Unilingo v1: 5)."
    )
    open_seconds: float = Field(
        60.0,
        ge=1,
        le=86_400,
        description="Seconds the breaker stays open before it lets probes through (Unilingo v1: 60).",
    )
    half_open_probes: int = Field(
        1,
        ge=1,
        le=1000,
        description="Calls let through at once while half-open; that many successes close the breaker, "
        "one failure opens it again.",
    )


class RetryPolicy(_Document):
    """How a failed provider call is retried (the job's attempts, with exponential backoff)."""

    attempts: int = Field(3, ge=1, le=20, description="Tries per call, the first one included.")
    backoff_seconds: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="First backoff; doubles each try. Also how long a 429 without Retry-After pauses the provider.",
    )
    max_backoff_seconds: float = Field(30.0, ge=0, le=86_400, description="Ceiling of the backoff.")

    @model_validator(mode="after")
    def _backoff_below_ceiling(self) -> RetryPolicy:
        if self.backoff_seconds > self.max_backoff_seconds:
            raise ValueError("backoffSeconds must not exceed maxBackoffSeconds")
        return self

    def delay(self, attempt: int) -> float:
        """Backoff before try ``attempt + 1`` (``attempt`` counts from 1), before any jitter."""
        return backoff.delay(backoff.exponential(self.backoff_seconds, self.max_backoff_seconds), attempt)


class BudgetPolicy(_Document):
    """What the provider may cost, in US dollars, per UTC day and per UTC month; left out: no limit."""

    usd_per_day: float | None = Field(
        None, ge=0, le=1e9, description="Spend allowed per UTC day (00:00-24:00 UTC); left out: no daily limit."
    )
    usd_per_month: float | None = Field(
        None, ge=0, le=1e10, description="Spend allowed per UTC calendar month; left out: no monthly limit."
    )
    when_spent: Literal["wait", "fail"] = Field(
        "wait",
        description="When a budget is spent: wait (jobs are deferred until the next UTC day or month) or fail "
        "(jobs fail with budget_exhausted).",
    )

    @model_validator(mode="after")
    def _day_within_month(self) -> BudgetPolicy:
        if self.usd_per_day is not None and self.usd_per_month is not None and self.usd_per_day > self.usd_per_month:
            raise ValueError("budget.usdPerDay must not exceed budget.usdPerMonth")
        return self

    @model_serializer(mode="wrap")
    def _without_unset_limits(self, handler):
        # An absent limit is absent in every document (Redis, the CRD's status): no nulls.
        return {name: value for name, value in handler(self).items() if value is not None}

    @property
    def limited(self) -> bool:
        return self.usd_per_day is not None or self.usd_per_month is not None


class PricePolicy(_Document):
    """What the provider charges per 1,000 tokens, in US dollars; spend is counted from the usage it reports."""

    usd_per_1k_input_tokens: float = Field(
        0.0, ge=0, le=1000, alias="usdPer1kInputTokens", description="Price of 1,000 prompt (input) tokens."
    )
    usd_per_1k_output_tokens: float = Field(
        0.0, ge=0, le=1000, alias="usdPer1kOutputTokens", description="Price of 1,000 completion (output) tokens."
    )

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.usd_per_1k_input_tokens + output_tokens * self.usd_per_1k_output_tokens) / 1000


# Default prices per provider. OpenAI's published price of gpt-4o-mini (openai.com/api/pricing,
# the model Unilingo v1 runs and OPENAI_MODEL's default): $0.15 per 1M input tokens and $0.60
# per 1M output tokens. The other providers bill characters, seconds or transactions, not
# tokens: no token price, so no spend counted unless a policy sets one.
DEFAULT_PRICES: dict[str, PricePolicy] = {
    "openai": PricePolicy(usd_per_1k_input_tokens=0.00015, usd_per_1k_output_tokens=0.0006),
}

# Spend is kept in integer nano-dollars in Redis: exact to $9 million in Lua's doubles.
NANO_USD = 1_000_000_000


class _Figures(NamedTuple):
    """The per-provider figures; everything else defaults the same for all providers."""

    requests_per_minute: int
    tokens_per_minute: int
    burst: int
    max_in_flight: int


V1_FIGURES: dict[str, _Figures] = {
    # Unilingo v1: GPT-4o-mini at "50 req/min, 75k tok/min"; its planned future state runs OpenAI
    # "parallel: 5 concurrent". Burst 10: OpenAI enforces its per-minute limits over shorter
    # periods too, so a minute's budget is not fired in one second.
    "openai": _Figures(50, 75_000, 10, 5),
    # Unilingo v1: Azure Speech "Max 20 concurrent" and no rate; the cap bounds the rate anyway
    # (20 calls of at least 2 s each: at most 600 a minute). Burst applies once metered.
    "azure-speech": _Figures(0, 0, 20, 20),
    # Unilingo v1: OCR "5k free/month", 1-3 s a call. Azure AI Vision's free tier (F0) allows 20
    # calls per minute; burst 5 (at most 5 in any 15 s) keeps the minute from front-loading.
    # 5 in flight: 20/min at up to 3 s each needs 1-2 at once, and 5 leaves room for bursts.
    "azure-vision": _Figures(20, 0, 5, 5),
    # Unilingo v1: Polly 2-15 s a request, no quota named. AWS's default SynthesizeSpeech quota for
    # neural voices is 8 transactions per second with a burst of 10, and its quota page
    # works through 8 concurrent requests: 480/min, burst 10, 8 in flight.
    "aws-polly": _Figures(480, 0, 10, 8),
    # Unilingo v1: Supabase storage / S3, no quota named. S3 takes thousands of requests per second
    # per prefix, so no rate is metered; 20 in flight bounds our sockets and memory.
    "storage": _Figures(0, 0, 20, 20),
}


def _v1_figure(field: str, fallback: int):
    """A default factory reading the provider's default figure (``provider`` is validated first)."""

    def factory(data: dict[str, Any]) -> int:
        figures = V1_FIGURES.get(str(data.get("provider")))
        return getattr(figures, field) if figures else fallback

    return factory


def _default_burst(data: dict[str, Any]) -> int:
    # A policy that lowers requestsPerMinute and says nothing of burst gets a burst that fits.
    burst = _v1_figure("burst", 1)(data)
    rpm = data.get("requests_per_minute", 0)
    return min(burst, rpm) if rpm > 0 else burst


class ProviderPolicy(_Document):
    """Limits one provider is called under, shared by every worker. Fields left out take the
    provider's defaults (Unilingo v1's figures)."""

    # The docstring above is the CRD's description of ``spec``, hence plain prose. The
    # per-provider defaults are in V1_FIGURES; breaker and retry default alike for all.

    provider: Provider = Field(description="The provider these limits apply to.")
    requests_per_minute: int = Field(
        default_factory=_v1_figure("requests_per_minute", 0),
        ge=0,
        le=1_000_000,
        description="Calls admitted in any rolling 60 s, across all workers; 0 = not metered.",
    )
    tokens_per_minute: int = Field(
        default_factory=_v1_figure("tokens_per_minute", 0),
        ge=0,
        le=100_000_000,
        description="Tokens admitted in any rolling 60 s (estimated before a call, reconciled after); 0 = not metered.",
    )
    burst: int = Field(
        default_factory=_default_burst,
        ge=1,
        le=1_000_000,
        description="Calls that may start back to back; beyond that calls are spread so that at most burst "
        "start in any burst/requestsPerMinute minutes. At most requestsPerMinute.",
    )
    max_in_flight: int = Field(
        default_factory=_v1_figure("max_in_flight", 1),
        ge=1,
        le=100_000,
        description="Calls in progress at once, across all workers (a distributed semaphore).",
    )
    breaker: BreakerPolicy = BreakerPolicy()
    retry: RetryPolicy = RetryPolicy()
    suspended: bool = Field(False, description="True: no calls at all; jobs wait until it is false again.")
    budget: BudgetPolicy = BudgetPolicy()
    price: PricePolicy = Field(
        default_factory=lambda data: DEFAULT_PRICES.get(data.get("provider"), PricePolicy()),
        description="Price per 1,000 input and output tokens (OpenAI: gpt-4o-mini's published price).",
    )
    adaptive: bool = Field(
        False,
        description="True: hold requestsPerMinute and tokensPerMinute at what the provider's own rate-limit "
        "headers say the account allows (OpenAI's x-ratelimit-limit-*), never above the figures here.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ProviderPolicy:
        if self.requests_per_minute and self.burst > self.requests_per_minute:
            raise ValueError("burst must not exceed requestsPerMinute")
        if self.breaker.half_open_probes > self.max_in_flight:
            raise ValueError("breaker.halfOpenProbes must not exceed maxInFlight")
        return self

    def limiter_fields(self) -> dict[str, int]:
        """The flat integer fields the limiter's Lua reads (times in milliseconds)."""
        return {
            "rpm": self.requests_per_minute,
            "tpm": self.tokens_per_minute,
            "burst": self.burst,
            "max_in_flight": self.max_in_flight,
            "failure_threshold": self.breaker.failure_threshold,
            "open_ms": round(self.breaker.open_seconds * 1000),
            "half_open_probes": self.breaker.half_open_probes,
            "pause_ms": round(self.retry.backoff_seconds * 1000),
            "suspended": int(self.suspended),
            # Spend: budgets in nano-dollars (-1: no limit), prices in nano-dollars per 1,000
            # tokens, and what a spent budget does (0 wait, 1 fail).
            "budget_day_nusd": _nano(self.budget.usd_per_day),
            "budget_month_nusd": _nano(self.budget.usd_per_month),
            "price_in_nusd_1k": _nano(self.price.usd_per_1k_input_tokens),
            "price_out_nusd_1k": _nano(self.price.usd_per_1k_output_tokens),
            "budget_fail": int(self.budget.when_spent == "fail"),
            "adaptive": int(self.adaptive),
        }


def _nano(usd: float | None) -> int:
    return -1 if usd is None else round(usd * NANO_USD)


# The order the limiter's scripts read the flat fields in (``HMGET`` and default arguments).
LIMITER_FIELDS: tuple[str, ...] = tuple(ProviderPolicy(provider="openai").limiter_fields())

DEFAULT_POLICIES: dict[str, ProviderPolicy] = {p: ProviderPolicy(provider=p) for p in PROVIDERS}


def default_policy(provider: str) -> ProviderPolicy:
    try:
        return DEFAULT_POLICIES[provider]
    except KeyError:
        raise ValueError(f"unknown provider {provider!r}; known: {', '.join(PROVIDERS)}") from None


# --- the JSON schema, clean enough to be the CRD's spec -------------------------------------


def policy_json_schema() -> dict[str, Any]:
    """``ProviderPolicy``'s JSON schema as a Kubernetes structural schema wants it.

    Nested models are inlined (no ``$ref``/``$defs``), titles dropped (descriptions stay),
    ``additionalProperties: false`` dropped, which structural schemas forbid beside
    ``properties`` (the API server prunes unknown fields instead), and optional fields
    (``None``: not set) typed by their value alone. Per-provider defaults are
    absent on purpose: the API server cannot know them, the model fills them in.
    """
    schema = ProviderPolicy.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.pop("$defs", {})

    def clean(node: Any) -> Any:
        if isinstance(node, list):
            return [clean(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = definitions[node["$ref"].rsplit("/", 1)[-1]]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        if "anyOf" in node and {"type": "null"} in node["anyOf"]:
            # An optional field (None: not set) is a field left out: Kubernetes has no null.
            (kept,) = [branch for branch in node["anyOf"] if branch != {"type": "null"}]
            node = {**kept, **{k: v for k, v in node.items() if k not in ("anyOf", "default")}}
        cleaned = {}
        for key, value in node.items():
            if key == "title" or (key == "additionalProperties" and value is False):
                continue
            # a "properties" map is keyed by field names, never keywords: clean each field
            cleaned[key] = {n: clean(v) for n, v in value.items()} if key == "properties" else clean(value)
        return cleaned

    return clean(schema)


# --- the store ------------------------------------------------------------------------------


class StoredPolicy(NamedTuple):
    """A provider's policy and the revision it was written under (0: never written, defaults)."""

    policy: ProviderPolicy
    revision: int


# unilingo/lua/policy/write.lua: the next revision, the document, the limiter's fields, the notice.
_WRITE = lua("policy/write")

_READ_FIELDS = ("doc", "revision")


def document(policy: ProviderPolicy) -> str:
    """The canonical JSON of a policy (camelCase, sorted keys): stored and digested as is."""
    return json.dumps(policy.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))


def _write_call(policy: ProviderPolicy, revision_floor: int) -> tuple[list[str], list[Any]]:
    doc = document(policy)
    digest = hashlib.sha256(doc.encode()).hexdigest()[:16]
    fields = [item for pair in policy.limiter_fields().items() for item in pair]
    return (
        [keys.policy(policy.provider), keys.policy_revision()],
        [keys.policy_channel(), policy.provider, doc, digest, max(0, int(revision_floor)), *fields],
    )


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def parse_stored(provider: str, raw: list[Any]) -> StoredPolicy:
    """``HMGET doc revision`` into a policy; a missing document means the defaults."""
    doc, revision = (_text(v) for v in raw)
    if doc is None:
        return StoredPolicy(default_policy(provider), 0)
    return StoredPolicy(ProviderPolicy.model_validate_json(doc), int(revision or 0))


def parse_change(message: bytes | str) -> tuple[str, int]:
    """A ``policy_channel`` message into ``(provider, revision)``."""
    change = json.loads(message)
    return change["provider"], int(change["revision"])


def _known(provider: str) -> str:
    default_policy(provider)  # raises for an unknown provider
    return provider


class _Store:
    def __init__(self, client):
        self.client = client  # redis.Redis for PolicyStore, redis.asyncio.Redis for AsyncPolicyStore
        self._write = _WRITE.bind(client)

    def _read_all_pipeline(self):
        pipe = self.client.pipeline(transaction=False)  # one round trip for every provider
        for provider in PROVIDERS:
            pipe.hmget(keys.policy(provider), _READ_FIELDS)
        return pipe


def _parse_all(replies: list[Any]) -> dict[str, StoredPolicy]:
    return {p: parse_stored(p, raw) for p, raw in zip(PROVIDERS, replies, strict=True)}


class PolicyStore(_Store):
    """Policy documents in Redis, on a synchronous client (workers, operator, CLI)."""

    def write(self, policy: ProviderPolicy, revision_floor: int = 0) -> int:
        """Store ``policy`` under the next revision and announce it; returns the revision.

        ``revision_floor``: the highest revision the caller knows was handed out (the operator:
        every revision its resources report). The counter is raised to it first, so a counter
        that went back (a flushed Redis) never repeats a revision."""
        return int(self._write(*_write_call(policy, revision_floor)))

    def read(self, provider: str) -> StoredPolicy:
        """The provider's policy and its revision; the defaults at revision 0 if none."""
        return parse_stored(provider, self.client.hmget(keys.policy(_known(provider)), _READ_FIELDS))

    def reset(self, provider: str) -> int:
        """Back to the defaults, as a new revision (revisions never go back)."""
        return self.write(default_policy(provider))

    def read_all(self) -> dict[str, StoredPolicy]:
        return _parse_all(self._read_all_pipeline().execute())

    def revision(self) -> int:
        """The latest revision written for any provider."""
        return int(self.client.get(keys.policy_revision()) or 0)


class AsyncPolicyStore(_Store):
    """The same store on an asyncio client (the API tier)."""

    async def write(self, policy: ProviderPolicy, revision_floor: int = 0) -> int:
        return int(await self._write(*_write_call(policy, revision_floor)))

    async def read(self, provider: str) -> StoredPolicy:
        return parse_stored(provider, await self.client.hmget(keys.policy(_known(provider)), _READ_FIELDS))

    async def reset(self, provider: str) -> int:
        return await self.write(default_policy(provider))

    async def read_all(self) -> dict[str, StoredPolicy]:
        return _parse_all(await self._read_all_pipeline().execute())

    async def revision(self) -> int:
        return int(await self.client.get(keys.policy_revision()) or 0)
