"""Flashcards and lessons generated through OpenAI with validated structured output."""

from __future__ import annotations

from pydantic import BaseModel, Field

from workers.providers.openai_chat import complete_structured

# Content longer than this is split so that each request stays well inside the context
# window and the output cap; the cards of all parts are merged.
CHUNK_CHARS = 6_000


class Card(BaseModel):
    front: str = Field(min_length=1)
    back: str = Field(min_length=1)


class CardSet(BaseModel):
    cards: list[Card]


class Outline(BaseModel):
    title: str
    objectives: list[str]
    sections: list[str]


class VocabularyItem(BaseModel):
    term: str
    translation: str
    example: str


class Vocabulary(BaseModel):
    items: list[VocabularyItem]


class Exercise(BaseModel):
    prompt: str
    answer: str


class Exercises(BaseModel):
    items: list[Exercise]


def split_content(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Split on paragraph, then sentence boundaries, never inside a word."""
    text = text.strip()
    if len(text) <= size:
        return [text]
    chunks, current = [], ""
    for paragraph in text.replace("\r\n", "\n").split("\n"):
        pieces = [paragraph] if len(paragraph) <= size else _sentences(paragraph, size)
        for piece in pieces:
            if current and len(current) + len(piece) + 1 > size:
                chunks.append(current.strip())
                current = ""
            current += piece + "\n"
    if current.strip():
        chunks.append(current.strip())
    return chunks


def _sentences(paragraph: str, size: int) -> list[str]:
    words, out, current = paragraph.split(" "), [], ""
    for word in words:
        if current and len(current) + len(word) + 1 > size:
            out.append(current)
            current = ""
        current = f"{current} {word}" if current else word
    if current:
        out.append(current)
    return out


def flashcards(ctx) -> dict:
    params = ctx.params
    count = int(params.get("count") or 10)
    language = params.get("language") or "en"
    subject = params.get("subject") or "general"
    chunks = split_content(params["content"])
    per_chunk = [count // len(chunks) + (1 if i < count % len(chunks) else 0) for i in range(len(chunks))]
    cards: list[Card] = []
    seen: set[str] = set()
    for index, (chunk, wanted) in enumerate(zip(chunks, per_chunk), start=1):
        if wanted == 0:
            continue
        messages = [
            {"role": "system", "content": f"You write study flashcards about {subject} in language '{language}'."},
            {"role": "user", "content": f"Write exactly {wanted} flashcards (front: question, back: answer) from:\n\n{chunk}"},
        ]
        result = complete_structured(ctx, messages, CardSet, "flashcards", max_output_tokens=min(4000, 120 * wanted + 200))
        for card in result.cards:
            key = card.front.strip().lower()
            if key not in seen:
                seen.add(key)
                cards.append(card)
        if len(chunks) > 1:
            ctx.progress(parts_done=index, parts=len(chunks))
    return {"cards": [c.model_dump() for c in cards[:count]], "count": min(len(cards), count), "parts": len(chunks)}


def lesson(ctx) -> dict:
    params = ctx.params
    topic, level, language = params["topic"], params.get("level") or "beginner", params.get("language") or "en"
    context = f"\n\nSource material:\n{params['content'][:CHUNK_CHARS]}" if params.get("content") else ""
    system = {"role": "system", "content": f"You design {level} language lessons in language '{language}'."}
    steps = ("outline", "vocabulary", "exercises")

    outline = complete_structured(ctx, [system, {"role": "user", "content": f"Outline a lesson on: {topic}{context}"}], Outline, "outline")
    ctx.progress(step="outline", steps_done=1, steps=len(steps))
    vocabulary = complete_structured(
        ctx, [system, {"role": "user", "content": f"List the key vocabulary for the lesson '{outline.title}' on {topic}."}], Vocabulary, "vocabulary"
    )
    ctx.progress(step="vocabulary", steps_done=2, steps=len(steps))
    exercises = complete_structured(
        ctx,
        [system, {"role": "user", "content": f"Write exercises for '{outline.title}' using: {', '.join(v.term for v in vocabulary.items)}"}],
        Exercises,
        "exercises",
    )
    ctx.progress(step="exercises", steps_done=3, steps=len(steps))
    return {
        "title": outline.title,
        "objectives": outline.objectives,
        "sections": outline.sections,
        "vocabulary": [v.model_dump() for v in vocabulary.items],
        "exercises": [e.model_dump() for e in exercises.items],
    }
