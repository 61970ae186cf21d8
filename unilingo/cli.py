"""``unilingo``: the command-line client of the platform.

Submits jobs through the HTTP API exactly as the mobile app does, follows them until they end
and prints their results; ``unilingo policy`` is the admin command that sets provider policy
in Redis when no operator runs (the operator writes the same documents from the CRD).

The token comes from ``UNILINGO_TOKEN``; on the local stack, without it, the client mints one
for ``--user`` with the development secret (what ``make token`` prints).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import httpx

from unilingo.settings import get_settings

TERMINAL = {"succeeded", "failed", "cancelled"}


def _client(args) -> httpx.Client:
    token = os.environ.get("UNILINGO_TOKEN")
    if not token:
        from unilingo.tokens import mint

        token = mint(args.user, admin=args.admin)
    base = args.api or os.environ.get("UNILINGO_API") or f"http://127.0.0.1:{get_settings().api_port}"
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _submit(args, path: str, **kwargs) -> dict:
    with _client(args) as client:
        response = client.post(path, **kwargs)
        if response.status_code >= 400:
            sys.exit(f"error {response.status_code}: {response.text}")
        accepted = response.json()
        print(f"job {accepted['job_id']} {accepted['status']}", file=sys.stderr)
        if args.no_wait:
            return accepted
        return _follow(client, accepted["job_id"], args.timeout)


def _follow(client: httpx.Client, job_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        state = (job.get("status"), json.dumps(job.get("progress"), sort_keys=True))
        if state != last:
            progress = f" {job['progress']}" if job.get("progress") else ""
            print(f"job {job_id} {job['status']}{progress}", file=sys.stderr)
            last = state
        if job.get("status") in TERMINAL or time.monotonic() > deadline:
            return job
        time.sleep(0.25)


def _file(path: str) -> tuple[str, bytes]:
    data = Path(path).read_bytes()
    return Path(path).name, data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="unilingo", description=__doc__.splitlines()[0])
    parser.add_argument("--api", help="API base URL (default: the local stack)")
    parser.add_argument("--user", default=os.environ.get("UNILINGO_USER", "local-user"))
    parser.add_argument("--admin", action="store_true")
    parser.add_argument("--no-wait", action="store_true", help="print the job id and return")
    parser.add_argument("--timeout", type=float, default=300)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pdf", help="extract the text of a PDF")
    p.add_argument("file")
    p = sub.add_parser("flashcards", help="generate flashcards from text or a text file")
    p.add_argument("content", help="the text, or @path to read it from a file")
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--subject")
    p.add_argument("--language")
    p = sub.add_parser("lesson", help="generate a lesson")
    p.add_argument("topic")
    p.add_argument("--level")
    p.add_argument("--language")
    p = sub.add_parser("pronounce", help="score the pronunciation of a WAV recording")
    p.add_argument("audio")
    p.add_argument("reference_text")
    p.add_argument("--language", default="en-US")
    p = sub.add_parser("ocr", help="read the text in an image")
    p.add_argument("image")
    p = sub.add_parser("tts", help="synthesise speech")
    p.add_argument("text")
    p.add_argument("--voice")
    p.add_argument("--language")
    p = sub.add_parser("job", help="show a job")
    p.add_argument("job_id")
    sub.add_parser("jobs", help="list your recent jobs")
    p = sub.add_parser("cancel", help="cancel a job")
    p.add_argument("job_id")
    p = sub.add_parser("policy", help="show or set provider policy in Redis (admin)")
    p.add_argument("action", choices=["show", "set", "reset"])
    p.add_argument("provider", nargs="?")
    p.add_argument("--set", dest="fields", action="append", default=[], metavar="FIELD=VALUE",
                   help="camelCase policy field, e.g. requestsPerMinute=40 or breaker.openSeconds=30")

    args = parser.parse_args(argv)
    if args.command == "policy":
        _policy(args)
        return
    if args.command == "pdf":
        name, data = _file(args.file)
        out = _submit(args, "/api/process-pdf", files={"file": (name, data, "application/pdf")})
    elif args.command == "flashcards":
        content = Path(args.content[1:]).read_text() if args.content.startswith("@") else args.content
        body = {"content": content, "count": args.count, "subject": args.subject, "language": args.language}
        out = _submit(args, "/api/ai/generate-flashcards", json={k: v for k, v in body.items() if v is not None})
    elif args.command == "lesson":
        body = {"topic": args.topic, "level": args.level, "language": args.language}
        out = _submit(args, "/api/ai/generate-lesson", json={k: v for k, v in body.items() if v is not None})
    elif args.command == "pronounce":
        name, data = _file(args.audio)
        out = _submit(args, "/api/pronunciation-assess", files={"audio": (name, data, "audio/wav")},
                      data={"reference_text": args.reference_text, "language": args.language})
    elif args.command == "ocr":
        name, data = _file(args.image)
        out = _submit(args, "/api/process-image", files={"image": (name, data, "application/octet-stream")})
    elif args.command == "tts":
        body = {"text": args.text, "voice": args.voice, "language": args.language}
        out = _submit(args, "/api/audio/generate", json={k: v for k, v in body.items() if v is not None})
    else:
        with _client(args) as client:
            if args.command == "job":
                out = client.get(f"/api/jobs/{args.job_id}").json()
            elif args.command == "jobs":
                out = client.get("/api/jobs").json()
            else:
                out = client.delete(f"/api/jobs/{args.job_id}").json()
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if isinstance(out, dict) and out.get("status") == "failed":
        sys.exit(1)


def _policy(args) -> None:
    from unilingo.connections import redis_client
    from unilingo.policy import PolicyStore

    store = PolicyStore(redis_client())
    if args.action == "show":
        policies = store.read_all()
        print(json.dumps({p: {"revision": rev, "policy": pol.model_dump(by_alias=True)} for p, (pol, rev) in policies.items()}, indent=2))
        return
    if not args.provider:
        sys.exit("name a provider")
    if args.action == "reset":
        print(f"revision {store.reset(args.provider)}")
        return
    current, _ = store.read(args.provider)
    document = current.model_dump(by_alias=True)
    for assignment in args.fields:
        path, _, value = assignment.partition("=")
        node = document
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = json.loads(value) if value not in ("", None) else value
    policy = type(current).model_validate(document)
    print(f"revision {store.write(policy)}")


if __name__ == "__main__":
    main()
