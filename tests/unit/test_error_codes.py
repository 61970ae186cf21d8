"""Every error code the code base can answer with is listed, with its meaning, for clients."""

from __future__ import annotations

import re
from pathlib import Path

from api.errors import API_ERROR_CODES, STATUS_CODES
from unilingo.errors import JOB_ERROR_CODES

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    p for folder in ("api", "unilingo", "workers") for ext in ("*.py", "*.lua") for p in (ROOT / folder).rglob(ext)
]


def found(pattern: str) -> set[str]:
    return {code for path in SOURCES for code in re.findall(pattern, path.read_text())}


def test_every_job_error_code_is_listed():
    raised = found(r'\bcode="([a-z_]+)"')  # PermanentError(..., code=...), TransientError(...)
    raised |= found(r'store\.fail\(\s*job_id,\s*claim\.run_token,\s*"([a-z_]+)"')
    raised |= found(r'\bfailed\(\s*"([a-z_]+)"')  # the runner's store.fail, fenced
    raised |= found(r"'error', '\{\"code\":\"([a-z_]+)\"")  # the cancel script's
    assert {"cancelled", "timeout", "silent_audio"} <= raised, "the patterns no longer match the code"
    assert raised - set(JOB_ERROR_CODES) == set()


def test_every_api_error_code_is_listed():
    answered = found(r'ApiError\(\s*\d{3},\s*"([a-z_]+)"') | found(r'WebhookTargetError\(\s*"([a-z_]+)"')
    answered |= set(STATUS_CODES.values()) | {"missing_token", "invalid_token", "token_expired"}
    assert len(answered) > 20
    assert answered - set(API_ERROR_CODES) == set()
