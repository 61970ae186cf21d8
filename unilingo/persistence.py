"""What jobs made, kept in Supabase's PostgreSQL through a direct psycopg 3 connection.

Off unless ``DATABASE_URL`` is set. Migrations are the plain SQL files in ``migrations/``,
applied in name order, each in its own transaction, recorded in ``schema_migrations``; a
PostgreSQL advisory lock keeps two workers that start together from applying one twice.
Each process applies what is missing the first time it connects
(``python -m unilingo.persistence`` does it by hand).

Writes are idempotent by job id: every table a job writes has ``UNIQUE (job_id)`` and every
insert says ``ON CONFLICT (job_id) DO NOTHING``, so a retried job, a re-delivered one or two
workers racing on a stalled lease write one row. A lesson and its vocabulary go in one
transaction: the vocabulary rows exist exactly when their lesson does.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from unilingo.errors import TransientError
from unilingo.jobs import Job, JobType
from unilingo.settings import get_settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{3,})_[\w-]+\.sql$")
_ADVISORY_LOCK = 0x756E696C  # "unil"

_local = threading.local()
_migrated: set[str] = set()
_migrate_lock = threading.Lock()


# ------------------------------------------------------------------------- migrations


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} is not named NNN_description.sql")
        found.append((path.stem, path))
    versions = [v.split("_", 1)[0] for v, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError("two migrations share a number")
    return found


def migrate(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet applied, in order; the names applied now."""
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, path in migration_files(directory):
            if version in done:
                continue
            with conn.transaction():  # a savepoint: one failing file leaves nothing half-done
                conn.execute(path.read_text())
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied_now.append(version)
            log.info("applied migration %s", version)
    return applied_now


# ------------------------------------------------------------------------- connection


def connect(url: str | None = None) -> psycopg.Connection:
    settings = get_settings()
    url = url or settings.database_url
    if not url:
        raise RuntimeError("no database: DATABASE_URL is not set")
    return psycopg.connect(url, autocommit=True, connect_timeout=int(max(1, settings.database_connect_timeout_seconds)))


def _connection(url: str) -> psycopg.Connection:
    """This thread's connection, opened (and the schema migrated) on first use."""
    conn = getattr(_local, "conn", None)
    if conn is not None and not conn.closed and getattr(_local, "url", None) == url:
        return conn
    conn = connect(url)
    with _migrate_lock:
        if url not in _migrated:
            migrate(conn)
            _migrated.add(url)
    _local.conn, _local.url = conn, url
    return conn


def _drop_connection() -> None:
    conn = getattr(_local, "conn", None)
    _local.conn = None
    if conn is not None:
        try:
            conn.close()
        except Exception:
            pass


# ------------------------------------------------------------------------- writes


def persist(job: Job, result: dict[str, Any], usage: dict[str, int] | None = None, cache_hit: bool = False) -> bool:
    """Write what ``job`` made; False when persistence is off (no ``DATABASE_URL``).

    A database that cannot be reached is a ``TransientError``: the job retries, and the
    response cache spares it a second provider call.
    """
    url = get_settings().database_url
    if not url:
        return False
    try:
        write(_connection(url), job, result, usage or {}, cache_hit)
    except psycopg.OperationalError as exc:
        _drop_connection()
        raise TransientError(f"the database is unavailable: {exc}", code="persistence_unavailable") from exc
    return True


def write(
    conn: psycopg.Connection, job: Job, result: dict[str, Any], usage: dict[str, int], cache_hit: bool = False
) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO users (id) VALUES (%s) ON CONFLICT (id) DO UPDATE SET last_seen_at = now()", (job.owner,)
        )
        writer = _WRITERS.get(job.type)
        if writer is not None:
            writer(conn, job, result, cache_hit)
        conn.execute(
            "INSERT INTO usage (job_id, user_id, job_type, providers, tokens, cache_hit)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (job_id) DO NOTHING",
            (job.job_id, job.owner, job.type.value, Jsonb(usage), int(usage.get("openai", 0)), cache_hit),
        )


def _lesson(conn: psycopg.Connection, job: Job, result: dict, cache_hit: bool) -> None:
    params = job.params
    row = conn.execute(
        "INSERT INTO esp_lessons (job_id, user_id, topic, level, language, title, objectives, sections, exercises, "
        "cache_hit)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (job_id) DO NOTHING RETURNING id",
        (
            job.job_id,
            job.owner,
            params.get("topic") or result.get("title") or "",
            params.get("level"),
            params.get("language"),
            result.get("title") or params.get("topic") or "",
            Jsonb(result.get("objectives") or []),
            Jsonb(result.get("sections") or []),
            Jsonb(result.get("exercises") or []),
            cache_hit,
        ),
    ).fetchone()
    if row is None:
        return  # written by an earlier attempt, vocabulary included
    vocab = result.get("vocabulary") or []
    if vocab:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO lesson_vocab (lesson_id, position, term, translation, example) VALUES (%s, %s, %s, %s, "
                "%s)",
                [(row[0], i, v.get("term", ""), v.get("translation"), v.get("example")) for i, v in enumerate(vocab)],
            )


def _flashcards(conn: psycopg.Connection, job: Job, result: dict, cache_hit: bool) -> None:
    cards = result.get("cards") or []
    conn.execute(
        "INSERT INTO flashcard_sets (job_id, user_id, subject, language, cards, card_count, cache_hit)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (job_id) DO NOTHING",
        (
            job.job_id,
            job.owner,
            job.params.get("subject"),
            job.params.get("language"),
            Jsonb(cards),
            len(cards),
            cache_hit,
        ),
    )


def _audio(conn: psycopg.Connection, job: Job, result: dict, cache_hit: bool) -> None:
    conn.execute(
        "INSERT INTO audio_lessons (job_id, user_id, text, language, voice, storage_bucket, storage_key, audio_url,"
        " content_type, characters, cache_hit) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (job_id) DO NOTHING",
        (
            job.job_id,
            job.owner,
            job.params.get("text") or "",
            result.get("language"),
            result.get("voice"),
            result.get("bucket") or "",
            result.get("key") or "",
            result.get("audio_url"),
            result.get("content_type"),
            result.get("characters"),
            cache_hit,
        ),
    )


_WRITERS = {JobType.LESSON: _lesson, JobType.FLASHCARDS: _flashcards, JobType.TTS: _audio}


def main() -> None:
    """``python -m unilingo.persistence``: apply the migrations to DATABASE_URL."""
    url = get_settings().database_url
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    with connect(url) as conn:
        applied = migrate(conn)
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))


if __name__ == "__main__":
    main()
