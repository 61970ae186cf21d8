"""Every Redis key the platform uses, named in one place.

Keys share the ``unilingo:`` prefix so that one Redis can be shared and inspected safely.
Celery's queue lists are the exception: they are the bare queue names, because that is the
list KEDA's Redis scaler must watch (see ``queue_list``).
"""

PREFIX = "unilingo"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def job_input(job_id: str) -> str:
    """Uploaded bytes of a job, kept apart from the record so status reads stay small."""
    return f"{PREFIX}:job:{job_id}:input"


def job_events(job_id: str) -> str:
    """Pub/sub channel announcing each change of a job (SSE follows it)."""
    return f"{PREFIX}:job:{job_id}:events"


def user_jobs(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}:jobs"


def idempotency(user_id: str, key: str) -> str:
    return f"{PREFIX}:idem:{user_id}:{key}"


def leases() -> str:
    """Sorted set of running job ids scored by lease expiry (the stalled-job check)."""
    return f"{PREFIX}:leases"


def deferred(provider: str) -> str:
    """Sorted set of jobs waiting for a provider permit, scored by when to try again."""
    return f"{PREFIX}:deferred:{provider}"


def retries() -> str:
    """Sorted set of jobs waiting out a retry backoff, scored by when to run again."""
    return f"{PREFIX}:retries"


def delayed_sets() -> str:
    """Set naming every delayed sorted set (deferred per provider, retries) to promote from."""
    return f"{PREFIX}:delayed"


def queue_list(queue: str) -> str:
    """The Redis list a Celery queue's messages wait in (kombu's Redis transport)."""
    return queue


def stats(name: str) -> str:
    return f"{PREFIX}:stats:{name}"


def policy(provider: str) -> str:
    return f"{PREFIX}:policy:{provider}"


def policy_revision() -> str:
    return f"{PREFIX}:policy:revision"


def policy_channel() -> str:
    return f"{PREFIX}:policy:changed"


def limiter(provider: str, part: str) -> str:
    return f"{PREFIX}:limiter:{provider}:{part}"


def learned_limits(provider: str) -> str:
    """HASH: the provider's own rate-limit figures as its last answer stated them (unilingo.adaptive)."""
    return limiter(provider, "learned")


def quota(scope: str, subject: str) -> str:
    return f"{PREFIX}:quota:{scope}:{subject}"


def cache(digest: str) -> str:
    return f"{PREFIX}:cache:{digest}"


# A worker is alive while its last announcement in ``workers_alive`` and ``workers_of_queue``
# (``workers.housekeeping``, every second) is younger than this.
WORKER_ALIVE_SECONDS = 30.0


def workers_alive() -> str:
    """Sorted set of every worker, scored by its last announcement."""
    return f"{PREFIX}:workers"


def workers_of_queue(queue: str) -> str:
    """Sorted set of the workers consuming ``queue``, scored by their last announcement."""
    return f"{PREFIX}:workers:queue:{queue}"


def activity(user_id: str) -> str:
    """Hash of one user's recent activity (submissions, quota hits, failures, per minute)."""
    return f"{PREFIX}:activity:{user_id}"


def activity_users() -> str:
    """Sorted set of the users with an activity record, scored by their last activity."""
    return f"{PREFIX}:activity-users"


def webhook_outbox() -> str:
    """Sorted set of pending webhook deliveries (by job id), scored by next attempt time."""
    return f"{PREFIX}:webhooks:outbox"


def webhook(delivery_id: str) -> str:
    """Hash of one pending webhook delivery: job_id, url, attempts, last_error."""
    return f"{PREFIX}:webhook:{delivery_id}"


def webhook_dead() -> str:
    """Capped list of webhook deliveries given up after the last attempt (JSON entries)."""
    return f"{PREFIX}:webhooks:dead"


def fair_queue(queue: str) -> str:
    """Hash of a queue's fair share: its virtual time and each owner's last tag (``unilingo.fairness``)."""
    return f"{PREFIX}:fair:{queue}"


def fair_index(queue: str) -> str:
    """Sorted set of the jobs in a queue's list, scored by their fair-share tag."""
    return f"{fair_queue(queue)}:index"


def fair_messages(queue: str) -> str:
    """Hash of the jobs in a queue's list: job id -> its message (where a new job is inserted beside)."""
    return f"{fair_queue(queue)}:messages"


def fair_keys(queue: str) -> tuple[str, str, str]:
    """A queue's fair-share state as the job scripts take it: hash, tag index, messages."""
    return fair_queue(queue), fair_index(queue), fair_messages(queue)


def worker_pod_busy(namespace: str, pod: str) -> str:
    """How many jobs the worker in pod ``namespace/pod`` runs (short-lived; ``unilingo.scaling``)."""
    return f"{PREFIX}:pod:{namespace}/{pod}:busy"
