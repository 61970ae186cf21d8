"""What the operator writes to Redis, and when. The kopf handlers (``handlers``) only call in.

One provider, one policy in force. A ``UnilingoProviderPolicy`` *claims* its provider; when
several claim the same one (two namespaces, a copy-paste), the oldest (creation time, then
namespace/name) governs and the others report ``Ready=False, reason=Conflict`` until it goes.

* ``apply`` (create, spec update, resume, and adoption by the timer): validate the spec with
  the model; invalid: ``Ready=False`` and the last good policy stays in Redis untouched.
  Valid: write it through ``PolicyStore`` (one Lua script: next revision + document + the
  limiter's fields + a change notice), then record the revision and the complete policy in the
  status. Create and update always write a new revision; resume writes only when Redis does not
  hold the policy already (an operator restart is not a policy change).
* ``restore`` (finalizer, on delete): the governing policy gone, Redis gets the next claimant's
  policy, or else the defaults.
* ``repair`` (timer): Redis must hold ``status.policy`` (the last policy applied); a flush or a
  failover to a replica that missed the write shows as a missing or different document, which
  is written again. A revision counter that went back (flushed) is first raised above every
  revision the operator has reported, so revisions never repeat.

Redis refusing or timing out: the status says so (``RedisUnavailable``); handlers retry with
exponential backoff (``kopf.TemporaryError``), the timer simply tries again on its next tick.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from unilingo.backoff import delay, exponential
from unilingo.connections import async_redis_client
from unilingo.limiter import AsyncLimiter
from unilingo.live_status import live_status
from unilingo.policy import PROVIDERS, AsyncPolicyStore, ProviderPolicy, default_policy, document
from unilingo.settings import get_settings
from unilingo_operator import status as st

MAX_BACKOFF = 60.0


@dataclasses.dataclass
class Runtime:
    """What every handler shares (kept in kopf's ``memo``)."""

    client: Any
    store: AsyncPolicyStore
    limiter: AsyncLimiter
    locks: dict[str, asyncio.Lock] = dataclasses.field(default_factory=lambda: collections.defaultdict(asyncio.Lock))
    high_revision: int = 0

    @classmethod
    def connect(cls, redis_url: str) -> Runtime:
        options = {
            "socket_connect_timeout": 2,
            "socket_timeout": 2,
            "health_check_interval": 10,
            "retry_on_timeout": False,
        }
        settings = get_settings()
        if settings.redis_sentinels:  # Sentinel: follow the master through failovers
            client = async_redis_client(settings, **options)
        else:
            client = aioredis.Redis.from_url(redis_url, **options)
        return cls(
            client=client,
            store=AsyncPolicyStore(client),
            limiter=AsyncLimiter(client, window_margin_seconds=settings.provider_window_margin_seconds),
        )

    async def close(self) -> None:
        await self.client.aclose()


# --- claims: which resource governs a provider ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Claim:
    uid: str
    namespace: str
    name: str
    created: str
    deleting: bool
    spec: dict[str, Any]
    revision: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.created, self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def claim(body: Mapping[str, Any]) -> dict[str, Claim] | None:
    """The index entry of a resource: ``{provider: Claim}`` (None when it names no provider)."""
    spec = body.get("spec") or {}
    provider = spec.get("provider")
    if provider not in PROVIDERS:
        return None
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return {
        provider: Claim(
            uid=meta.get("uid", ""),
            namespace=meta.get("namespace") or "",
            name=meta.get("name", ""),
            created=meta.get("creationTimestamp") or "",
            deleting=bool(meta.get("deletionTimestamp")),
            spec=st.plain(spec),
            revision=int(status.get("revision") or 0),
        )
    }


def governing(claims: Iterable[Claim], *, exclude: str | None = None) -> Claim | None:
    live = [c for c in claims if not c.deleting and c.uid != exclude]
    return min(live, key=lambda c: c.key) if live else None


def _all_claims(index: Mapping[str, Iterable[Claim]]) -> list[Claim]:
    return [c for provider in PROVIDERS for c in index.get(provider, [])]


# --- helpers ------------------------------------------------------------------------------------


def explain(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        if item.get("type") == "default_factory_not_called":
            continue  # a consequence of another field's error (its default reads that field)
        where = ".".join(str(p) for p in item.get("loc", ())) or "spec"
        parts.append(f"{where}: {item.get('msg')}")
    return "; ".join(parts)


_BACKOFF = exponential(1.0, MAX_BACKOFF)


def backoff(retry: int) -> float:
    """kopf's ``retry`` counts from 0: 1 s, 2 s, 4 s, ... up to ``MAX_BACKOFF``."""
    return delay(_BACKOFF, retry + 1)


def describe(policy: ProviderPolicy) -> str:
    def metered(value: int, unit: str) -> str:
        return f"{value} {unit}/min" if value else f"{unit}/min not metered"

    parts = [
        metered(policy.requests_per_minute, "req"),
        metered(policy.tokens_per_minute, "tokens"),
        f"burst {policy.burst}",
        f"{policy.max_in_flight} in flight",
        f"breaker {st.breaker_summary(policy)}",
    ]
    if policy.suspended:
        parts.append("SUSPENDED")
    return ", ".join(parts)


async def _write(rt: Runtime, policy: ProviderPolicy, index: Mapping[str, Iterable[Claim]]) -> int:
    # Every revision the operator has seen reported: the store never hands out one of them again.
    floor = max([rt.high_revision, *(c.revision for c in _all_claims(index))])
    revision = await rt.store.write(policy, revision_floor=floor)
    rt.high_revision = max(rt.high_revision, revision)
    return revision


def _redis_down(
    body, patch, status, generation: int | None, error: Exception, logger: logging.Logger, *, retry: int | None
) -> None:
    retrying = f"retrying in {backoff(retry):g}s" if retry is not None else "retrying"
    revision = (status or {}).get("revision")
    kept = f"revision {revision} stays in force where Redis still has it" if revision else "workers use the defaults"
    message = f"Redis unavailable ({type(error).__name__}: {error}); {retrying}; {kept}"
    if st.transitioned(status, False, st.REDIS_UNAVAILABLE):
        kopf.warn(body, reason=st.REDIS_UNAVAILABLE, message=message)
    # A stable message (no retry count) so that repeated failures do not re-patch the status.
    stable = f"Redis unavailable ({type(error).__name__}); retrying with backoff; {kept}"
    st.apply(
        patch,
        status,
        st.desired_status(
            status, ready=False, reason=st.REDIS_UNAVAILABLE, message=stable, generation=generation, observed=False
        ),
    )
    logger.warning(message)


# --- the three entry points ---------------------------------------------------------------------


async def apply(
    rt: Runtime,
    *,
    body: Mapping[str, Any],
    patch: Any,
    index: Mapping[str, Iterable[Claim]],
    cause: str,
    retry: int = 0,
    logger: logging.Logger,
) -> None:
    """Bring Redis and the status in line with the spec (create/update/resume/adopt)."""
    spec, meta, status = body.get("spec") or {}, body.get("metadata") or {}, body.get("status") or {}
    generation = meta.get("generation")
    try:
        policy = ProviderPolicy.model_validate(st.plain(spec))
    except ValidationError as error:
        revision = status.get("revision")
        kept = f"the last good policy (revision {revision}) stays in force" if revision else "Redis is left as it is"
        message = f"invalid spec: {explain(error)}; {kept}"
        if st.transitioned(status, False, st.INVALID_SPEC) or cause in ("create", "update"):
            kopf.warn(body, reason=st.INVALID_SPEC, message=message)
        st.apply(
            patch,
            status,
            st.desired_status(status, ready=False, reason=st.INVALID_SPEC, message=message, generation=generation),
        )
        logger.warning(message)
        return

    provider = policy.provider
    owner = governing(index.get(provider, []))
    if owner is not None and owner.uid != meta.get("uid"):
        message = (
            f"{owner.ref} (older) already governs provider {provider}; this policy takes over when that one is deleted"
        )
        if st.transitioned(status, False, st.CONFLICT):
            kopf.warn(body, reason=st.CONFLICT, message=message)
        st.apply(
            patch,
            status,
            st.desired_status(status, ready=False, reason=st.CONFLICT, message=message, generation=generation),
        )
        return

    try:
        async with rt.locks[provider]:
            stored = await rt.store.read(provider)
            same = stored.revision > 0 and document(stored.policy) == document(policy)
            if cause in ("resume", "adopt") and same:
                revision, wrote = stored.revision, False
            else:
                revision, wrote = await _write(rt, policy, index), True
    except RedisError as error:
        _redis_down(body, patch, status, generation, error, logger, retry=retry)
        raise kopf.TemporaryError(f"Redis unavailable: {error}", delay=backoff(retry)) from error

    rt.high_revision = max(rt.high_revision, revision)
    message = f"revision {revision} in force: {describe(policy)}"
    if wrote:
        kopf.info(body, reason="PolicyWritten", message=f"{provider} {message}")
        logger.info(f"wrote {provider} policy as revision {revision} ({cause})")
    st.apply(
        patch, status, st.in_force(status, message=message, generation=generation, policy=policy, revision=revision)
    )


async def restore(
    rt: Runtime,
    *,
    body: Mapping[str, Any],
    index: Mapping[str, Iterable[Claim]],
    retry: int = 0,
    logger: logging.Logger,
) -> None:
    """The finalizer: a governing policy is deleted; the next claimant's or the defaults follow."""
    spec = body.get("spec") or {}
    provider = spec.get("provider")
    if provider not in PROVIDERS:
        return
    me = claim(body)[provider]
    successor = governing(index.get(provider, []), exclude=me.uid)
    if successor is not None and successor.key < me.key:
        logger.info(f"{successor.ref} governs {provider}; nothing to restore")
        return  # this one never governed (it was in conflict)

    target, source = default_policy(provider), "the defaults"
    if successor is not None:
        try:
            target, source = ProviderPolicy.model_validate(successor.spec), f"{successor.ref}'s policy"
        except ValidationError:
            source = f"the defaults ({successor.ref}, next in line, is invalid)"

    try:
        async with rt.locks[provider]:
            stored = await rt.store.read(provider)
            if stored.revision == 0 and successor is None:
                revision = None  # nothing stored: the defaults are in force already
            elif document(stored.policy) == document(target) and stored.revision > 0:
                revision = stored.revision
            else:
                revision = await _write(rt, target, index)
    except RedisError as error:
        logger.warning(f"Redis unavailable while restoring {provider} ({error}); retrying")
        kopf.warn(body, reason=st.REDIS_UNAVAILABLE, message=f"cannot restore {provider} yet: {error}")
        raise kopf.TemporaryError(f"Redis unavailable: {error}", delay=backoff(retry)) from error

    shown = f"revision {revision}" if revision else "nothing stored"
    kopf.info(
        body,
        reason="DefaultsRestored" if successor is None else "HandedOver",
        message=f"{provider}: {source} in force ({shown})",
    )
    logger.info(f"deleted: {provider} now has {source} ({shown})")


async def repair(
    rt: Runtime,
    *,
    body: Mapping[str, Any],
    patch: Any,
    index: Mapping[str, Iterable[Claim]],
    logger: logging.Logger,
) -> None:
    """The timer: Redis must hold the policy last applied; rewrite it when it does not."""
    spec, meta, status = body.get("spec") or {}, body.get("metadata") or {}, body.get("status") or {}
    if meta.get("deletionTimestamp"):
        return
    generation = meta.get("generation")
    if status.get("observedGeneration") != generation:
        return  # a change the create/update handlers have not finished with: theirs to do
    condition = st.ready_condition(status)
    applied = status.get("policy")
    if condition.get("reason") == st.CONFLICT or not applied:
        owner = governing(index.get(spec.get("provider"), []))
        if owner is not None and owner.uid == meta.get("uid") and condition.get("reason") != st.INVALID_SPEC:
            await _adopt(rt, body=body, patch=patch, index=index, logger=logger)
        return

    try:
        policy = ProviderPolicy.model_validate(st.plain(applied))
    except ValidationError:
        return  # a status no model accepts (the model changed since): the next spec change fixes it
    owner = governing(index.get(policy.provider, []))
    if owner is not None and owner.uid != meta.get("uid"):
        return

    try:
        async with rt.locks[policy.provider]:
            stored = await rt.store.read(policy.provider)
            if stored.revision > 0 and document(stored.policy) == document(policy):
                revision, found = stored.revision, None
            else:
                found = "no policy" if stored.revision == 0 else f"revision {stored.revision} with other limits"
                revision = await _write(rt, policy, index)
    except RedisError as error:
        _redis_down(body, patch, status, generation, error, logger, retry=None)
        return

    rt.high_revision = max(rt.high_revision, revision)
    if found:
        message = f"Redis had {found} for {policy.provider}; rewrote the policy in force as revision {revision}"
        kopf.warn(body, reason="Repaired", message=message)
        logger.warning(message)
    if condition.get("reason") == st.INVALID_SPEC:
        # Keep the InvalidSpec condition; only the revision of the last good policy moves.
        st.apply(patch, status, {"revision": revision})
        return
    message = f"revision {revision} in force: {describe(policy)}"
    st.apply(
        patch, status, st.in_force(status, message=message, generation=generation, policy=policy, revision=revision)
    )


async def report_live(
    rt: Runtime,
    *,
    body: Mapping[str, Any],
    patch: Any,
    index: Mapping[str, Iterable[Claim]],
    logger: logging.Logger,
) -> None:
    """The timer: ``status.live`` says what the workers meet now (``unilingo.live_status``).

    Only the policy that governs its provider reports it; one in conflict, or not applied yet,
    has no live state of its own. Redis down: the last report stays, and the Ready condition
    (the repair timer's) says why.
    """
    spec, meta, status = body.get("spec") or {}, body.get("metadata") or {}, body.get("status") or {}
    provider = spec.get("provider")
    if meta.get("deletionTimestamp") or provider not in PROVIDERS or not status.get("policy"):
        return
    owner = governing(index.get(provider, []))
    if owner is None or owner.uid != meta.get("uid") or st.ready_condition(status).get("reason") == st.CONFLICT:
        if status.get("live") is not None:
            patch.status["live"] = None  # another policy governs: its status tells
        return
    try:
        provider_status = await rt.limiter.status(provider)
    except RedisError as error:
        logger.debug(f"live status of {provider} not refreshed: Redis unavailable ({error})")
        return
    old, new = st.plain(status.get("live")), live_status(provider_status)
    if old != new:
        patch.status["live"] = st.merge_patch(old, new)


async def _adopt(rt: Runtime, *, body, patch, index, logger) -> None:
    """A policy that waited (conflict) now governs: apply it, from the timer."""
    try:
        await apply(rt, body=body, patch=patch, index=index, cause="adopt", logger=logger)
    except kopf.TemporaryError:
        pass  # the status says RedisUnavailable; the next tick tries again
