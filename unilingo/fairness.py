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

A job's priority (0-9, ``TIER_PRIORITIES``: free 5, premium 7 by default) moves its place, not
its owner's turns: the list is ordered by tag + (9 - priority) x ``PRIORITY_TURNS``, and the
virtual time follows the tags alone. So a premium job goes 20 turns ahead of free jobs queued
at the same time, and a client that lowers its job's priority (``Job-Priority``, never above
its tier's) lets other users' jobs go first while the queue's clock catches up with it.

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


# Priority: 0-9, higher sooner. A job's priority places it in virtual time: each level below the
# top is PRIORITY_TURNS turns (of a weight-1 user) later. A lowered job lets the jobs others
# queue in the meantime go first, yet is never starved: the queue's clock reaches it. The
# owner's own turn is not moved, so their next job at their usual priority does not wait
# behind it.
MAX_PRIORITY = 9
PRIORITY_TURNS = 10
DEFAULT_TIER = "free"


def tier_priority(tier: str, tier_priorities: dict[str, int]) -> int:
    """The priority a tier's jobs get by default, and the most its clients may ask for."""
    value = tier_priorities.get(tier, tier_priorities.get(DEFAULT_TIER, MAX_PRIORITY // 2 + 1))
    return max(0, min(MAX_PRIORITY, int(value)))


def priority_offset(priority: int) -> float:
    """How much later in the queue's virtual time a job of ``priority`` is placed."""
    return float((MAX_PRIORITY - priority) * PRIORITY_TURNS)


def weight(tier: str, tier_weights: dict[str, float]) -> float:
    """The share a tier's user gets of a queue, relative to the default tier's 1."""
    value = tier_weights.get(tier, 1.0)
    return value if value > 0 else 1.0
