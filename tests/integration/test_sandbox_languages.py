"""Flashcards and lessons in the language asked for, built from the input's own words.

The worker's own handlers (``workers.handlers.ai``) ask the sandbox's OpenAI emulation
with the production prompts, on real Redis with the real limiter.
"""

from __future__ import annotations

import re

import pytest

from tests.support.providers import configure, job_context, reset_process_caches
from unilingo.jobs import JobType
from workers.handlers import ai

# English words the sandbox's own sentences would bring in; German ones they bring in instead.
ENGLISH = {
    "the",
    "is",
    "a",
    "of",
    "in",
    "what",
    "does",
    "mean",
    "explain",
    "describe",
    "use",
    "key",
    "idea",
    "think",
    "about",
    "how",
    "relates",
    "to",
    "for",
    "example",
    "translated",
    "beginner",
    "and",
}
GERMAN = {
    "der",
    "die",
    "das",
    "ist",
    "und",
    "was",
    "bedeutet",
    "beim",
    "thema",
    "erklären",
    "beschreiben",
    "benutzen",
    "erkennen",
    "vergleichen",
    "übersetzung",
    "überlege",
    "wie",
    "mit",
    "zum",
    "ein",
    "wichtiger",
}
CONTENT_DE = (
    "Im Restaurant bestellt man zuerst die Getränke. Der Kellner bringt die Speisekarte. "
    "Zum Schluss bittet man um die Rechnung und gibt ein Trinkgeld."
)


@pytest.fixture
def providers(sandbox_reset, redis_url, monkeypatch):
    handle = configure(monkeypatch, sandbox_reset, redis_url)
    yield handle
    monkeypatch.undo()
    reset_process_caches()


def words_of(value) -> list[str]:
    if isinstance(value, dict):
        return [w for item in value.values() for w in words_of(item)]
    if isinstance(value, list):
        return [w for item in value for w in words_of(item)]
    return re.findall(r"[^\W\d_]+", str(value).lower())


def test_a_german_lesson_is_in_german(providers, redis_url):
    ctx = job_context(
        redis_url,
        JobType.LESSON,
        {"topic": "Im Restaurant bestellen", "level": "beginner", "language": "de", "content": CONTENT_DE},
    )
    lesson = ai.lesson(ctx)
    words = words_of({key: lesson[key] for key in ("title", "objectives", "sections", "vocabulary", "exercises")})
    assert not set(words) & ENGLISH, sorted(set(words) & ENGLISH)
    assert len(set(words) & GERMAN) >= 5, sorted(set(words))
    # Built from the input's own words.
    terms = {item["term"].lower() for item in lesson["vocabulary"]}
    assert terms & {"restaurant", "bestellen", "kellner", "speisekarte", "rechnung", "trinkgeld", "getränke"}, terms


def test_flashcards_follow_the_asked_language_and_the_content(providers, redis_url):
    ctx = job_context(redis_url, JobType.FLASHCARDS, {"content": CONTENT_DE, "count": 4, "language": "de"})
    cards = ai.flashcards(ctx)["cards"]
    assert len(cards) == 4
    words = words_of(cards)
    assert not set(words) & ENGLISH, sorted(set(words) & ENGLISH)
    fronts = " ".join(card["front"] for card in cards).lower()
    assert any(term in fronts for term in ("kellner", "speisekarte", "rechnung", "trinkgeld", "restaurant")), fronts

    english = ai.flashcards(
        job_context(
            redis_url,
            JobType.FLASHCARDS,
            {
                "content": "The heart pumps blood through the arteries. Veins bring the blood back to the heart.",
                "count": 2,
                "language": "en",
            },
        )
    )["cards"]
    assert any(word in ENGLISH for word in words_of(english))
