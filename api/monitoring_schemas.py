"""Response models of the status and admin routes (documentation: the routes answer with plain dicts).

``api.routes.monitoring`` builds the answers; these models say their shape in OpenAPI, and
tests validate real answers against the document.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class StatusLimits(BaseModel):
    requests_per_minute: int | None = Field(description="null: not metered")
    tokens_per_minute: int | None
    burst: int
    max_in_flight: int
    breaker_failure_threshold: int
    breaker_open_seconds: float
    breaker_half_open_probes: int


class StatusEffective(BaseModel):
    requests_per_minute: int | None = Field(
        description="What permits are held to: the policy's figure, or what the provider says the account allows "
        "when lower and the policy is adaptive; null: not metered"
    )
    tokens_per_minute: int | None


class StatusLearned(BaseModel):
    """What the provider's own rate-limit headers (x-ratelimit-*) said on its last answer."""

    requests_per_minute: int | None = Field(description="x-ratelimit-limit-requests; null: not stated")
    tokens_per_minute: int | None = Field(description="x-ratelimit-limit-tokens; null: not stated")
    requests_remaining: int | None
    tokens_remaining: int | None
    requests_reset_seconds: float | None
    tokens_reset_seconds: float | None
    observed_at: float = Field(description="When the answer came (Unix seconds)")


class StatusBudget(BaseModel):
    window_seconds: int
    requests_used: int
    requests_left: int | None
    tokens_used: int
    tokens_left: int | None


class StatusSpendPeriod(BaseModel):
    spent_usd: float = Field(description="Reported usage at the policy's prices, plus reservations of calls in flight")
    budget_usd: float | None = Field(description="null: no limit for this period")
    left_usd: float | None = Field(description="null: no limit for this period")
    resets_at: str = Field(description="When the next UTC day or month begins (ISO 8601)")


class StatusSpend(BaseModel):
    """What the provider has cost in the current UTC day and calendar month, against the policy's budget."""

    day: StatusSpendPeriod
    month: StatusSpendPeriod
    when_spent: Literal["wait", "fail"]
    exhausted: bool = Field(description="True: a budget is spent; the provider's jobs wait (or fail)")


class StatusBreaker(BaseModel):
    state: Literal["closed", "open", "half_open"]
    consecutive_failures: int
    half_open_in_seconds: float | None = Field(description="While open: seconds until it lets probes through")
    probes_in_flight: int
    trips: int


class StatusQueue(BaseModel):
    name: str
    depth: int
    oldest_age_seconds: float
    workers_alive: int


class ProviderStatus(BaseModel):
    """A provider's policy in force, what is left of its budget, its breaker and its queue."""

    service: str
    status: Literal["operational", "degraded", "unavailable", "suspended"]
    revision: int
    policy: dict[str, Any] = Field(description="The UnilingoProviderPolicy spec in force (camelCase, as in the CRD)")
    adaptive: bool = Field(description="Whether the limits follow what the provider says the account allows")
    effective: StatusEffective
    learned: StatusLearned | None = Field(description="null: no answer of the provider has stated its limits")
    limits: StatusLimits
    budget: StatusBudget
    spend: StatusSpend | None
    in_flight: int
    in_flight_left: int
    breaker: StatusBreaker
    paused_for_seconds: float
    suspended: bool
    deferred_jobs: int
    queue: StatusQueue
    checked_at: str


class UserBrief(BaseModel):
    user_id: str
    submitted: int
    failed: int
    quota_hits: int
    risk_score: int
    risk_level: Literal["low", "medium", "high"]


class UsersOverview(BaseModel):
    generated_at: str
    users: dict[str, int] = Field(description="tracked, active_last_hour, active_last_24h")
    activity: dict[str, int] = Field(description="submitted, submitted_last_hour, failed, quota_hits")
    risk_levels: dict[str, int] = Field(description="users per risk level: high, medium, low")
    top_by_activity: list[UserBrief]
    top_by_risk: list[UserBrief]
    retention: dict[str, int]


class UserRecord(UserBrief):
    failure_share: float
    submitted_last_hour: int
    peak_per_minute: int
    burstiness: float
    risk_factors: dict[str, float] = Field(description="quota_pressure, failure_share, burstiness, each 0-1")
    first_seen: str | None
    last_seen: str | None


class UsersStatistics(BaseModel):
    generated_at: str
    sort: Literal["risk", "activity", "recent"]
    total_users: int
    scoring: dict[str, Any] = Field(description="The risk score's formula and its level thresholds")
    users: list[UserRecord]


class PlatformSummary(BaseModel):
    """The platform at a glance: HTTP requests, jobs, providers, breakers, queues, quotas, cache."""

    generated_at: str
    requests: dict[str, Any]
    jobs: dict[str, Any]
    services: dict[str, dict[str, Any]] = Field(
        description="Per provider: calls by outcome, errors, latency, permits, breaker"
    )
    breakers: dict[str, str]
    queues: dict[str, dict[str, Any]]
    queue_sizes: dict[str, int]
    deferred: dict[str, int]
    retry_scheduled: int
    quota_rejections: dict[str, int]
    cache: dict[str, float]
