"""Persistence on a real PostgreSQL 15 (started by the ``postgres_server`` session fixture).

Migrations apply in order and once; rows land in Unilingo v1's tables; foreign keys hold; a
retried job writes once, also when it is retried for real through the runner.
"""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
import redis

from tests.support.jobs import submit
from tests.support.providers import configure, reset_process_caches
from unilingo import persistence
from unilingo.errors import TransientError
from unilingo.jobs import Job, JobStatus, JobStore, JobType
from workers import runner
from workers.tasks import HANDLERS


@pytest.fixture
def db(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    reset_process_caches()
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn
    monkeypatch.undo()
    reset_process_caches()


def make_job(job_type: JobType, params: dict, owner: str = "alice") -> Job:
    now = time.time()
    return Job(
        job_id=uuid.uuid4().hex,
        type=job_type,
        status=JobStatus.RUNNING,
        owner=owner,
        params=params,
        created_at=now,
        updated_at=now,
    )


LESSON = {
    "title": "Ordering food",
    "objectives": ["order a meal", "ask for the bill"],
    "sections": ["greetings", "the menu"],
    "vocabulary": [
        {"term": "la cuenta", "translation": "the bill", "example": "La cuenta, por favor."},
        {"term": "el menú", "translation": "the menu", "example": "¿Tiene el menú?"},
        {"term": "la propina", "translation": "the tip", "example": "Dejo una propina."},
    ],
    "exercises": [{"prompt": "Ask for the bill", "answer": "La cuenta, por favor."}],
}


def count(conn, table: str, where: str = "TRUE", *args) -> int:
    return conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", args).fetchone()[0]


def test_migrations_apply_in_order_and_once(database_url, tmp_path):
    with persistence.connect(database_url) as conn:
        assert persistence.migrate(conn) == ["001_initial"]
        assert persistence.migrate(conn) == []  # already applied: nothing to do
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {
            "schema_migrations",
            "users",
            "esp_lessons",
            "lesson_vocab",
            "flashcard_sets",
            "audio_lessons",
            "usage",
        } <= tables

        # A later migration applies after the earlier ones; a broken one applies nothing.
        (tmp_path / "001_initial.sql").write_text("SELECT 1")  # recorded already: skipped
        (tmp_path / "002_add_notes.sql").write_text("ALTER TABLE esp_lessons ADD COLUMN notes text")
        (tmp_path / "003_broken.sql").write_text("ALTER TABLE no_such_table ADD COLUMN x int")
        with pytest.raises(psycopg.errors.UndefinedTable):
            persistence.migrate(conn, tmp_path)
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == ["001_initial"]
        (tmp_path / "003_broken.sql").unlink()
        assert persistence.migrate(conn, tmp_path) == ["002_add_notes"]
        assert (
            conn.execute("SELECT count(*) FROM information_schema.columns WHERE column_name = 'notes'").fetchone()[0]
            == 1
        )


def test_a_lesson_and_its_vocabulary_are_written_once(db):
    job = make_job(JobType.LESSON, {"topic": "Restaurants", "level": "A2", "language": "es"})
    usage = {"openai": 1234}
    assert persistence.persist(job, LESSON, usage)
    assert persistence.persist(job, LESSON, usage)  # the retry
    assert persistence.persist(job, LESSON, usage, cache_hit=True)  # a late duplicate delivery
    lesson = db.execute(
        "SELECT id, user_id, title, topic, level, objectives FROM esp_lessons WHERE job_id = %s", (job.job_id,)
    ).fetchall()
    assert len(lesson) == 1
    lesson_id, user_id, title, topic, level, objectives = lesson[0]
    assert (user_id, title, topic, level, objectives) == (
        "alice",
        "Ordering food",
        "Restaurants",
        "A2",
        LESSON["objectives"],
    )
    vocab = db.execute(
        "SELECT position, term, translation FROM lesson_vocab WHERE lesson_id = %s ORDER BY position", (lesson_id,)
    ).fetchall()
    assert vocab == [(0, "la cuenta", "the bill"), (1, "el menú", "the menu"), (2, "la propina", "the tip")]
    assert db.execute("SELECT tokens, providers, cache_hit FROM usage WHERE job_id = %s", (job.job_id,)).fetchall() == [
        (1234, {"openai": 1234}, False)
    ]
    assert count(db, "users") == 1


def test_flashcards_and_audio_rows(db):
    cards = make_job(JobType.FLASHCARDS, {"content": "...", "subject": "Biology", "language": "en"}, owner="bob")
    persistence.persist(
        cards, {"cards": [{"front": "a", "back": "b"}, {"front": "c", "back": "d"}], "count": 2}, {"openai": 90}
    )
    audio = make_job(JobType.TTS, {"text": "Hola"}, owner="bob")
    persistence.persist(
        audio,
        {
            "audio_url": "http://x/y",
            "bucket": "unilingo-audio",
            "key": "tts/bob/1.mp3",
            "voice": "Lucia",
            "language": "es-ES",
            "content_type": "audio/mpeg",
            "characters": 4,
        },
        {"aws-polly": 4},
    )
    assert db.execute("SELECT card_count, subject FROM flashcard_sets WHERE user_id = 'bob'").fetchall() == [
        (2, "Biology")
    ]
    assert db.execute("SELECT storage_key, voice, characters FROM audio_lessons").fetchall() == [
        ("tts/bob/1.mp3", "Lucia", 4)
    ]
    assert db.execute("SELECT job_type, tokens FROM usage ORDER BY job_type").fetchall() == [
        ("flashcards", 90),
        ("tts", 0),
    ]


def test_foreign_keys_hold(db):
    job = make_job(JobType.LESSON, {"topic": "Travel"})
    persistence.persist(job, LESSON, {"openai": 10})
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute("INSERT INTO lesson_vocab (lesson_id, position, term) VALUES (-1, 0, 'x')")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute("INSERT INTO esp_lessons (job_id, user_id, topic, title) VALUES ('j', 'nobody', 't', 't')")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute("INSERT INTO usage (job_id, user_id, job_type) VALUES ('j', 'nobody', 'pdf')")
    # Deleting a user takes their lessons, vocabulary and usage with them.
    db.execute("DELETE FROM users WHERE id = 'alice'")
    assert count(db, "esp_lessons") == count(db, "lesson_vocab") == count(db, "usage") == 0


def test_concurrent_duplicate_writes_land_once(db):
    job = make_job(JobType.LESSON, {"topic": "Weather"})
    errors: list[BaseException] = []

    def write() -> None:
        try:
            persistence.persist(job, LESSON, {"openai": 5})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert count(db, "esp_lessons") == 1 and count(db, "lesson_vocab") == 3 and count(db, "usage") == 1


def test_persistence_is_off_without_database_url_and_transient_when_down(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    reset_process_caches()
    job = make_job(JobType.LESSON, {"topic": "x"})
    assert persistence.persist(job, LESSON, {}) is False
    from devstack.ports import free_port

    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    reset_process_caches()
    with pytest.raises(TransientError) as err:
        persistence.persist(job, LESSON, {})
    assert err.value.code == "persistence_unavailable"
    monkeypatch.undo()
    reset_process_caches()


def test_a_job_retried_after_its_write_writes_once_and_pays_once(
    db, database_url, sandbox_reset, redis_url, monkeypatch
):
    """The first attempt writes its rows and then dies; the retry is a cache hit and a no-op write."""
    sandbox = configure(monkeypatch, sandbox_reset, redis_url, DATABASE_URL=database_url)
    sandbox.http.post("/_sandbox/reset")
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    real_persist = persistence.persist
    calls = []

    def persist_then_crash(*args, **kwargs):
        calls.append(kwargs.get("cache_hit"))
        written = real_persist(*args, **kwargs)
        if len(calls) == 1:
            raise TransientError("the worker lost its database connection right after the commit")
        return written

    monkeypatch.setattr(persistence, "persist", persist_then_crash)
    job_id = submit(store, JobType.LESSON, {"topic": "Colours", "level": "A1", "language": "fr"}, owner="carol")
    assert runner.run(job_id, HANDLERS[JobType.LESSON]) == "retried"
    openai_calls = sandbox.requests("openai")
    assert openai_calls == 3  # outline, vocabulary, exercises
    assert store.promote_due(now=time.time() + 3600) == 1
    assert runner.run(job_id, HANDLERS[JobType.LESSON]) == "succeeded"
    job = store.get(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.cache_hit and job.attempts == 2
    assert calls == [False, True]
    assert sandbox.requests("openai") == openai_calls  # the retry paid nothing
    assert count(db, "esp_lessons", "job_id = %s", job_id) == 1
    lesson_id = db.execute("SELECT id FROM esp_lessons WHERE job_id = %s", (job_id,)).fetchone()[0]
    assert count(db, "lesson_vocab", "lesson_id = %s", lesson_id) == len(job.result["vocabulary"]) > 0
    assert db.execute("SELECT cache_hit, tokens > 0 FROM usage WHERE job_id = %s", (job_id,)).fetchall() == [
        (False, True)
    ]
    client.close()
