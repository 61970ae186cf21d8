"""How a job ends when something goes wrong: the exceptions the runner understands.

Handlers and provider adapters raise these; the runner (``workers.runner``) turns each into
a job state and a run outcome (``unilingo.outcomes``). The split matters: a throttled job is
deferred and keeps its attempt, a transient failure retries with backoff, a permanent one
fails once with a code the client can act on.
"""

from __future__ import annotations


class JobException(Exception):
    """What a handler raises to end its job's run another way than with a result."""

    code = "error"

    def __init__(self, message: str = "", code: str | None = None):
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__
        if code:
            self.code = code


class PermanentError(JobException):
    """Retrying cannot help: bad input, a refused request, a corrupt file."""

    code = "failed"


class TransientError(JobException):
    """Might work later: a 5xx, a timeout, a dropped connection."""

    code = "provider_unavailable"
    provider: str | None = None  # whose call failed (the runner sets it): that policy says how to retry


class Deferred(JobException):
    """No permit now (rate, tokens, in-flight cap, breaker, suspension, provider Retry-After).

    The job waits in Redis, holding no worker slot, and its attempt does not count.
    """

    code = "deferred"

    def __init__(self, provider: str, retry_after: float, reason: str = "", waits_for: float | None = None):
        super().__init__(f"{provider}: no permit ({reason or 'throttled'}), retry in {retry_after:.2f}s")
        self.provider = provider
        self.retry_after = max(0.05, float(retry_after))
        self.reason = reason
        # How long the job will likely wait, when it is looked at again sooner than that (a
        # spent budget: the day's end, rechecked every minute in case the budget is raised).
        self.waits_for = waits_for


class Throttled(Deferred):
    """The provider itself answered 429: pause it for everyone, defer this job."""


class HandBack(BaseException):
    """The worker is leaving before this job could finish: give the job back, unfinished.

    Raised in a pool process when its drain time is up (``workers.drain``). A BaseException,
    like ``KeyboardInterrupt``, so that no handler's ``except Exception`` swallows it.
    """


# Every code a failed or cancelled job can carry (``error.code`` of a job), and what it means.
# The OpenAPI document lists them; a test keeps this table and the code in step.
JOB_ERROR_CODES: dict[str, str] = {
    "cancelled": "cancelled by its owner (DELETE /api/jobs/{id}) before it finished",
    "invalid_input": "a required field is missing or invalid (e.g. blank reference_text or text)",
    "input_expired": "the uploaded file expired before the job could run",
    "text_too_long": "the text is longer than the provider or this deployment takes",
    "invalid_ssml": "the SSML is not well-formed or uses what Polly refuses",
    "unsupported_language": "no voice or model for that language",
    "undecodable_audio": "the recording could not be decoded (damaged, or not audio)",
    "unsupported_audio": "the speech service could not take the audio",
    "silent_audio": "the recording is silent (a muted or covered microphone)",
    "audio_too_long": "the recording is longer than MAX_AUDIO_SECONDS",
    "no_speech": "the speech service heard no speech in the recording",
    "unsupported_image": "the image could not be decoded, or the Read API could not take it",
    "image_too_large": "the image has more pixels than MAX_IMAGE_PIXELS (or bytes than the Read API takes)",
    "image_too_small": "the image's smaller side is under 50 pixels",
    "no_text": "no text was found in the image",
    "ocr_failed": "the Read API could not analyse the image",
    "pdf_too_large": "the PDF is larger than MAX_PDF_BYTES",
    "pdf_too_many_pages": "the PDF has more pages than MAX_PDF_PAGES",
    "pdf_decompressed_too_large": "the PDF's page contents inflate to more than MAX_PDF_DECOMPRESSED_BYTES",
    "pdf_cpu_time_exceeded": "reading the PDF's text took more CPU time than MAX_PDF_CPU_SECONDS",
    "pdf_encrypted": "the PDF is encrypted",
    "pdf_corrupt": "the PDF could not be read",
    "pdf_no_text": "the PDF has no text layer (a scan: send its pages to /api/process-image)",
    "tts_empty": "the speech synthesiser returned no audio",
    "provider_bad_request": "the provider refused the request as malformed",
    "provider_bad_output": "the provider's answer did not have the required shape, after retries",
    "provider_rejected": "the provider refused the request (credentials, policy)",
    "provider_unavailable": "the provider could not be reached, after the policy's retries",
    "provider_error": "the provider kept failing (5xx), after the policy's retries",
    "provider_timeout": "the provider did not answer in time, after the policy's retries",
    "budget_exhausted": "the provider's daily or monthly spend budget is spent and its policy fails jobs "
    "rather than wait (budget.whenSpent: fail)",
    "persistence_unavailable": "the database could not be reached, after retries",
    "timeout": "the job ran longer than JOB_TIMEOUT_SECONDS",
    "internal_error": "a bug in Unilingo; reported to the operators",
}
