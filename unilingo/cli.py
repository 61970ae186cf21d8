"""``unilingo``: the command-line client of the platform.

Submits jobs through the HTTP API exactly as the mobile app does, follows each one over its
server-sent events (polling with backoff only when the stream cannot be had) and prints the
job as JSON on standard output once it has ended; what happens meanwhile goes to standard
error, a line per change. ``unilingo policy`` is the admin command that sets provider policy
in Redis when no operator runs (the operator writes the same documents from the CRD).

The token comes from ``UNILINGO_TOKEN``; on the local stack, without it, the client mints one
for ``--user`` (default ``me``, as in ``make token USER=me``) with the development secret.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import tenacity
from httpx_sse import SSEError, connect_sse

from unilingo.settings import get_settings

TERMINAL = {"succeeded", "failed", "cancelled"}
DEFAULT_USER = "me"

EXIT_JOB_FAILED = 1  # the job failed or was cancelled
EXIT_USAGE = 2  # bad arguments or local input (argparse uses 2 as well)
EXIT_API = 3  # the API refused the request or could not be reached
EXIT_TIMEOUT = 4  # the job had not ended when --timeout ran out

EPILOG = """\
exit status: 0 the job succeeded (or the command did what it says), 1 the job failed or was
cancelled, 2 bad arguments or input, 3 the API refused the request or could not be reached,
4 the job had not ended within --timeout.

environment: UNILINGO_API (the API's base URL), UNILINGO_TOKEN (a bearer token; without it
one is minted for --user with the local stack's development secret), UNILINGO_USER."""


class CliError(Exception):
    def __init__(self, message: str, status: int = EXIT_API):
        super().__init__(message)
        self.status = status


# --- talking to the API ------------------------------------------------------------------------


def _client(args) -> httpx.Client:
    token = os.environ.get("UNILINGO_TOKEN")
    if not token:
        from unilingo.tokens import mint

        token = mint(args.user, admin=args.admin)
    base = args.api or os.environ.get("UNILINGO_API") or f"http://127.0.0.1:{get_settings().api_port}"
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _checked(response: httpx.Response) -> Any:
    """The answer's JSON, or a ``CliError`` with the API's own code and message."""
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            detail = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            detail = response.text.strip()[:200] or response.reason_phrase
        retry = response.headers.get("retry-after")
        hint = f" (retry in {retry} s)" if retry else ""
        raise CliError(f"{response.request.method} {response.request.url.path}: {response.status_code} {detail}{hint}")
    try:
        return response.json()
    except ValueError:
        raise CliError(f"{response.request.url.path}: the API answered something that is not JSON") from None


def _submit(args, path: str, **kwargs) -> dict:
    with _client(args) as client:
        accepted = _checked(client.post(path, **kwargs))
        print(f"job {accepted['job_id']} {accepted['status']}", file=sys.stderr)
        if args.no_wait:
            return accepted
        return _follow(client, accepted["job_id"], args.timeout)


# --- following a job ---------------------------------------------------------------------------


def describe(job: dict) -> str:
    """One line a person can read for a job's state."""
    job_id, status = job.get("job_id", "?"), job.get("status", "?")
    line = f"job {job_id} {status}"
    waiting = job.get("waiting")
    if status == "queued" and waiting:
        line += f", waiting for {waiting.get('provider') or 'a retry'}: {_reason(waiting.get('reason'))}"
        if waiting.get("until"):
            line += f", next try at {_clock(waiting['until'])}"
    elif status == "running":
        progress = _progress(job.get("progress"))
        if job.get("attempts", 0) > 1:
            line += f" (attempt {job['attempts']})"
        if progress:
            line += f": {progress}"
    elif status in ("failed", "cancelled") and job.get("error"):
        line += f": {job['error'].get('code')}: {job['error'].get('message')}"
    return line


REASONS = {
    "rate": "its request budget is spent for now",
    "tokens": "its token budget is spent for now",
    "in_flight": "as many calls as it allows are in flight",
    "paused": "it asked us to slow down (429)",
    "breaker_open": "it is failing, circuit breaker open",
    "suspended": "suspended by an operator",
    "budget": "its spend budget is spent",
    "retry": "retrying after a transient failure",
}


def _reason(reason: str | None) -> str:
    return REASONS.get(reason or "", reason or "throttled")


def _clock(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return iso


def _progress(progress: Any) -> str:
    """Progress as words: steps and counts, never the partial result itself."""
    if not isinstance(progress, dict):
        return ""
    if "steps_done" in progress and "steps" in progress:
        text = f"step {progress['steps_done']} of {progress['steps']}"
        return f"{text} ({progress['step']} done)" if progress.get("step") else text
    if "pages_done" in progress:
        return f"page {progress['pages_done']} of {progress.get('pages', '?')}"
    words = [str(progress["step"])] if isinstance(progress.get("step"), str) else []
    words += [
        f"{k.replace('_', ' ')} {v}" for k, v in progress.items() if k != "step" and isinstance(v, int | float | str)
    ]
    return ", ".join(words)


def _follow(client: httpx.Client, job_id: str, timeout: float) -> dict:
    """Follow the job until it ends: its event stream, or polling when the stream fails."""
    deadline = time.monotonic() + timeout
    printed: list[str] = []

    def show(job: dict) -> None:
        line = describe(job)
        if not printed or printed[-1] != line:
            print(line, file=sys.stderr)
            printed.append(line)

    def timed_out(job: dict | None) -> CliError:
        return CliError(
            f"job {job_id} had not ended after {timeout:g} s (still {job and job.get('status')}); "
            f"follow it with: unilingo job {job_id}",
            EXIT_TIMEOUT,
        )

    job = _stream(client, job_id, deadline, show)
    if job is not None and job.get("status") in TERMINAL:
        return job
    if time.monotonic() > deadline:
        raise timed_out(job)

    def poll() -> dict:
        polled = _checked(client.get(f"/api/jobs/{job_id}"))
        show(polled)
        return polled

    # Polling with backoff (0.5 s doubling to 5 s), never sleeping past the deadline.
    backoff = tenacity.wait_exponential(multiplier=0.5, max=5.0)
    polling = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda polled: polled.get("status") not in TERMINAL),
        wait=lambda state: min(backoff(state), max(0.0, deadline - time.monotonic())),
        stop=tenacity.stop_after_delay(max(0.0, deadline - time.monotonic())),
    )
    try:
        return polling(poll)
    except tenacity.RetryError as error:
        raise timed_out(error.last_attempt.result()) from None


def _stream(client: httpx.Client, job_id: str, deadline: float, show) -> dict | None:
    """The job's SSE stream until a terminal state; None when the stream could not be followed."""
    job = None
    while time.monotonic() < deadline:
        # The server pings every 15 s: a read that waits longer means the stream is gone.
        read = max(0.1, min(30.0, deadline - time.monotonic()))
        try:
            with connect_sse(
                client, "GET", f"/api/jobs/{job_id}/events", timeout=httpx.Timeout(10, read=read)
            ) as events:
                if events.response.status_code != 200:
                    events.response.read()
                    _checked(events.response)  # 404 and the like are answers, not stream trouble
                events.response.raise_for_status()
                for event in events.iter_sse():
                    if event.event == "error":
                        return None  # expired or Redis trouble: the poll says what is true
                    job = event.json()
                    show(job)
                    if job.get("status") in TERMINAL:
                        return job
        except (SSEError, httpx.TransportError, ValueError):
            return job if job and job.get("status") in TERMINAL else None
    return job


# --- the commands --------------------------------------------------------------------------------


def _file(path: str) -> tuple[str, bytes]:
    try:
        return Path(path).name, Path(path).read_bytes()
    except FileNotFoundError:
        raise CliError(f"no such file: {path}", EXIT_USAGE) from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None


def _text(value: str) -> str:
    """The text itself, or a file's when it is ``@path``."""
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text()
        except OSError as exc:
            raise CliError(f"cannot read {value[1:]}: {exc.strerror}", EXIT_USAGE) from None
    return value


def _present(**fields) -> dict:
    return {k: v for k, v in fields.items() if v is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unilingo",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--api", help="the API's base URL (default: UNILINGO_API, else the local stack)")
    parser.add_argument(
        "--user",
        default=os.environ.get("UNILINGO_USER", DEFAULT_USER),
        help=f"the user a local token is minted for (default: {DEFAULT_USER})",
    )
    parser.add_argument("--admin", action="store_true", help="mint the local token with the admin role")
    parser.add_argument("--no-wait", action="store_true", help="print the accepted job and return at once")
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds to follow a job before giving up (default 300)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text)

    p = command("pdf", "Extract the text of a PDF, page by page.")
    p.add_argument("file", help="the PDF")
    p = command("flashcards", "Generate flashcards from a text (OpenAI).")
    p.add_argument("content", help="the text, or @path to read it from a file")
    p.add_argument("--count", type=int, default=10, help="how many cards (default 10)")
    p.add_argument("--subject", help="the subject, to focus the cards")
    p.add_argument("--language", help="the cards' language, e.g. de")
    p = command("lesson", "Generate a lesson on a topic: text, vocabulary, exercises (OpenAI).")
    p.add_argument("topic")
    p.add_argument("--level", help="beginner, intermediate or advanced")
    p.add_argument("--language", help="the lesson's language, e.g. de")
    p = command("pronounce", "Score the pronunciation of a recording against its reference text (Azure Speech).")
    p.add_argument("audio", help="the recording: WAV, M4A (AAC), WEBM or OGG (Opus, Vorbis), MP3 or FLAC")
    p.add_argument("reference_text", help="what the speaker meant to say")
    p.add_argument("--language", default="en-US", help="the speaker's language (default en-US)")
    p = command("ocr", "Read the text in an image (Azure Vision).")
    p.add_argument("image", help="a photo: JPEG, PNG, HEIC or WEBP")
    p.add_argument("--language", help="the text's language, e.g. de")
    p = command("tts", "Synthesise speech from text (AWS Polly); the result links to the audio.")
    p.add_argument("text")
    p.add_argument("--voice", help="a Polly voice, e.g. Vicki")
    p.add_argument("--language", help="e.g. de-DE")
    p = command("job", "Show one of your jobs.")
    p.add_argument("job_id")
    p = command("wait", "Follow one of your jobs until it ends.")
    p.add_argument("job_id")
    command("jobs", "List your recent jobs, newest first.")
    p = command("cancel", "Cancel one of your jobs that has not ended.")
    p.add_argument("job_id")
    p = command("policy", "Show, set or reset provider policy in Redis (admin; the operator does this in a cluster).")
    p.add_argument("action", choices=["show", "set", "reset"])
    p.add_argument("provider", nargs="?", help="openai, azure-speech, azure-vision, aws-polly or storage")
    p.add_argument(
        "--set",
        dest="fields",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="camelCase policy field, e.g. requestsPerMinute=40 or breaker.openSeconds=30",
    )
    return parser


def run(args) -> dict | list | None:
    if args.command == "policy":
        return _policy(args)
    if args.command == "pdf":
        name, data = _file(args.file)
        return _submit(args, "/api/process-pdf", files={"file": (name, data, "application/pdf")})
    if args.command == "flashcards":
        body = _present(content=_text(args.content), count=args.count, subject=args.subject, language=args.language)
        return _submit(args, "/api/ai/generate-flashcards", json=body)
    if args.command == "lesson":
        return _submit(
            args, "/api/ai/generate-lesson", json=_present(topic=args.topic, level=args.level, language=args.language)
        )
    if args.command == "pronounce":
        name, data = _file(args.audio)
        return _submit(
            args,
            "/api/pronunciation-assess",
            files={"audio": (name, data, "application/octet-stream")},
            data={"reference_text": args.reference_text, "language": args.language},
        )
    if args.command == "ocr":
        name, data = _file(args.image)
        return _submit(
            args,
            "/api/process-image",
            files={"image": (name, data, "application/octet-stream")},
            data=_present(language=args.language),
        )
    if args.command == "tts":
        return _submit(
            args, "/api/audio/generate", json=_present(text=args.text, voice=args.voice, language=args.language)
        )
    with _client(args) as client:
        if args.command == "job":
            return _checked(client.get(f"/api/jobs/{args.job_id}"))
        if args.command == "wait":
            return _follow(client, args.job_id, args.timeout)
        if args.command == "jobs":
            return _checked(client.get("/api/jobs"))
        return _checked(client.delete(f"/api/jobs/{args.job_id}"))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        out = run(args)
    except CliError as exc:
        print(f"unilingo: {exc}", file=sys.stderr)
        sys.exit(exc.status)
    except httpx.TransportError as exc:
        where = args.api or os.environ.get("UNILINGO_API") or f"http://127.0.0.1:{get_settings().api_port}"
        print(f"unilingo: cannot reach the API at {where} ({type(exc).__name__}); is `make run` up?", file=sys.stderr)
        sys.exit(EXIT_API)
    except KeyboardInterrupt:
        sys.exit(130)
    if out is not None:
        print(json.dumps(out, indent=2, ensure_ascii=False))
    if isinstance(out, dict) and out.get("status") in ("failed", "cancelled") and args.command not in ("cancel", "job"):
        sys.exit(EXIT_JOB_FAILED)


# --- provider policy -----------------------------------------------------------------------------


def _policy(args) -> dict:
    import redis
    from pydantic import ValidationError

    from unilingo.connections import redis_client
    from unilingo.policy import PolicyStore

    try:
        store = PolicyStore(redis_client())
        if args.action == "show":
            policies = store.read_all()
            return {p: {"revision": rev, "policy": pol.model_dump(by_alias=True)} for p, (pol, rev) in policies.items()}
        if not args.provider:
            raise CliError("name a provider: unilingo policy set openai --set requestsPerMinute=40", EXIT_USAGE)
        if args.action == "reset":
            return {"provider": args.provider, "revision": store.reset(args.provider)}
        current, _ = store.read(args.provider)
        document = current.model_dump(by_alias=True)
        for assignment in args.fields:
            _assign(document, assignment)
        policy = type(current).model_validate(document)
        return {"provider": args.provider, "revision": store.write(policy)}
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CliError(f"invalid policy for {args.provider}: {problems}", EXIT_USAGE) from None
    except KeyError as exc:
        raise CliError(f"unknown provider or policy field: {exc.args[0]}", EXIT_USAGE) from None
    except redis.RedisError as exc:
        raise CliError(f"cannot reach Redis at {get_settings().redis_url}: {exc}", EXIT_API) from None


def _assign(document: dict, assignment: str) -> None:
    path, sep, value = assignment.partition("=")
    if not sep or not path:
        raise CliError(f"--set takes FIELD=VALUE, not {assignment!r}", EXIT_USAGE)
    node = document
    *parents, leaf = path.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise KeyError(path)
        node = node[part]
    if leaf not in node:
        raise KeyError(path)
    try:
        node[leaf] = json.loads(value)
    except ValueError:
        node[leaf] = value


if __name__ == "__main__":
    main()
