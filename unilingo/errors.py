"""How a job ends when something goes wrong: the outcomes the runner understands.

Handlers and provider adapters raise these; the runner (``workers.runner``) turns each into
a job state. The split matters: a throttled job is deferred and keeps its attempt, a
transient failure retries with backoff, a permanent one fails once with a code the client
can act on.
"""

from __future__ import annotations


class JobOutcome(Exception):
    code = "error"

    def __init__(self, message: str = "", code: str | None = None):
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__
        if code:
            self.code = code


class PermanentError(JobOutcome):
    """Retrying cannot help: bad input, a refused request, a corrupt file."""

    code = "failed"


class TransientError(JobOutcome):
    """Might work later: a 5xx, a timeout, a dropped connection."""

    code = "provider_unavailable"


class Deferred(JobOutcome):
    """No permit now (rate, tokens, in-flight cap, breaker, suspension, provider Retry-After).

    The job waits in Redis, holding no worker slot, and its attempt does not count.
    """

    code = "deferred"

    def __init__(self, provider: str, retry_after: float, reason: str = ""):
        super().__init__(f"{provider}: no permit ({reason or 'throttled'}), retry in {retry_after:.2f}s")
        self.provider = provider
        self.retry_after = max(0.05, float(retry_after))
        self.reason = reason


class Throttled(Deferred):
    """The provider itself answered 429: pause it for everyone, defer this job."""


class HandBack(BaseException):
    """The worker is leaving before this job could finish: give the job back, unfinished.

    Raised in a pool process when its drain time is up (``workers.drain``). A BaseException,
    like ``KeyboardInterrupt``, so that no handler's ``except Exception`` swallows it.
    """
