"""Fair share between the users waiting on one queue: weighted fair queuing, in Redis.

A provider's quota is the platform's true ceiling, and behind it a first-come-first-served
queue lets one user's backlog of 80 jobs make everyone else wait for all of it. Here each
queue takes its users in turns instead: every job gets a *tag* when it is queued,

    tag = max(queue's virtual time, the owner's last tag) + 1 / weight

and the queue's Redis list is kept in tag order (consumers pop from the right: the smallest
tag runs next). The queue's virtual time is the tag of the job claimed last. So a heavy
user's jobs are tagged 1, 2, 3, ... 80 and a light user who arrives while job 10 runs is
tagged 11: it runs next but one, not 70 jobs later. A tier's weight (``TIER_WEIGHTS``)
divides the step: a premium user at weight 3 gets three turns to a free user's one.

Everything happens in the job scripts that queue and claim (``unilingo.jobs``), so the order
is exact across every API and worker replica, and the list still holds every waiting job,
which is what KEDA scales on. A deferred, retried or requeued job goes back with the tag it
had: it has waited its turn already. ``FAIR_SHARE=false`` queues first come, first served.

Placing a job is a look-up in a sorted set of the queued jobs' tags (``keys.fair_index``)
and, when the new job does not go last, one ``LINSERT`` after the first job tagged above it,
whose message the queue's ``keys.fair_messages`` hash holds (a key the script is given, where
the job record it would otherwise read is not).
"""

from __future__ import annotations

# The Lua functions the job scripts include: unilingo/lua/fairness.lua.


# How long a queue's fairness state outlives its last queued job: owners' tags older than the
# queue's clock count as the clock, so forgetting them changes nothing.
STATE_TTL_SECONDS = 7 * 24 * 3600


def weight(tier: str, tier_weights: dict[str, float]) -> float:
    """The share a tier's user gets of a queue, relative to the default tier's 1."""
    value = tier_weights.get(tier, 1.0)
    return value if value > 0 else 1.0
