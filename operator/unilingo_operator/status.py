"""The resource's status: a ``Ready`` condition, the revision and the policy in force.

``Ready`` is the one condition (the Kubernetes convention for a resource that is either in
force or not), with a machine-readable reason:

======================  ======  ===========================================================
reason                  status  meaning
======================  ======  ===========================================================
``Applied``             True    the spec is valid and in force in Redis as ``revision``
``InvalidSpec``         False   the model rejects the spec; the last good policy stays
``Conflict``            False   an older policy governs the same provider; this one waits
``RedisUnavailable``    False   Redis refuses or times out; retrying with backoff
======================  ======  ===========================================================

Only fields that change are patched, so the repair timer does not churn the resource.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from unilingo.policy import ProviderPolicy

READY = "Ready"
APPLIED = "Applied"
INVALID_SPEC = "InvalidSpec"
CONFLICT = "Conflict"
REDIS_UNAVAILABLE = "RedisUnavailable"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_condition(status: Mapping[str, Any] | None) -> dict[str, Any]:
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == READY:
            return dict(condition)
    return {}


def breaker_summary(policy: ProviderPolicy) -> str:
    seconds = policy.breaker.open_seconds
    shown = f"{seconds:g}"
    return f"{policy.breaker.failure_threshold} fails/{shown}s"


def _conditions(
    status: Mapping[str, Any] | None, ready: bool, reason: str, message: str, generation: int | None
) -> list[dict[str, Any]]:
    old = ready_condition(status)
    value = "True" if ready else "False"
    condition = {
        "type": READY,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": old.get("lastTransitionTime") if old.get("status") == value else now(),
        "observedGeneration": generation,
    }
    if not condition["lastTransitionTime"]:
        condition["lastTransitionTime"] = now()
    others = [dict(c) for c in (status or {}).get("conditions") or [] if c.get("type") != READY]
    return [*others, condition]


def desired_status(
    status: Mapping[str, Any] | None,
    *,
    ready: bool,
    reason: str,
    message: str,
    generation: int | None,
    policy: ProviderPolicy | None = None,
    revision: int | None = None,
    observed: bool = True,
) -> dict[str, Any]:
    """The status fields to set. ``policy``/``revision`` None: keep what is there (last good).

    ``observed`` False leaves ``observedGeneration`` alone: the generation was seen but not
    dealt with yet (Redis down), so the handlers, not the repair timer, still own it.
    """
    fields: dict[str, Any] = {"conditions": _conditions(status, ready, reason, message, generation)}
    if observed:
        fields["observedGeneration"] = generation
    if policy is not None:
        fields["policy"] = policy.model_dump(mode="json", by_alias=True)
        fields["breaker"] = breaker_summary(policy)
    if revision is not None:
        fields["revision"] = revision
    return fields


def in_force(
    status: Mapping[str, Any] | None, *, message: str, generation: int | None, policy: ProviderPolicy, revision: int
) -> dict[str, Any]:
    """The status of a policy that the workers now read: Ready, Applied, at this revision."""
    return desired_status(
        status,
        ready=True,
        reason=APPLIED,
        message=message,
        generation=generation,
        policy=policy,
        revision=revision,
    )


def apply(patch, status: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> bool:
    """Put the fields that differ from ``status`` into kopf's patch; True if any did."""
    status = status or {}
    changed = False
    for key, value in fields.items():
        if plain(status.get(key)) != value:
            patch.status[key] = value
            changed = True
    return changed


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386, what kopf sends) that turns ``old`` into ``new``: keys
    that ``new`` drops become null, or the API server would keep them."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    patch = {key: None for key in old if key not in new}
    for key, value in new.items():
        patch[key] = merge_patch(old.get(key), value)
    return patch


def plain(value: Any) -> Any:
    """kopf's read-only views of a body as plain dicts and lists (comparable, validatable)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def transitioned(status: Mapping[str, Any] | None, ready: bool, reason: str) -> bool:
    """Whether the Ready condition would change status or reason (worth an event)."""
    old = ready_condition(status)
    return old.get("status") != ("True" if ready else "False") or old.get("reason") != reason
