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
    for index, (chunk, wanted) in enumerate(zip(chunks, per_chunk, strict=True), start=1):
        if wanted == 0:
            continue
        messages = [
            {"role": "system", "content": f"You write study flashcards about {subject} in language '{language}'."},
            {
                "role": "user",
                "content": f"Write exactly {wanted} flashcards (front: question, back: answer) from:\n\n{chunk}",
            },
        ]

        def ask(messages=messages, wanted=wanted) -> dict:
            cap = min(4000, 120 * wanted + 200)
            return complete_structured(ctx, messages, CardSet, "flashcards", max_output_tokens=cap).model_dump()

        # One part per chunk; with a single chunk there is nothing to resume, so no checkpoint.
        part = ctx.step(f"part-{index}", ask, of=len(chunks)) if len(chunks) > 1 else ask()
        for card in CardSet.model_validate(part).cards:
            key = card.front.strip().lower()
            if key not in seen:
                seen.add(key)
                cards.append(card)
    return {"cards": [c.model_dump() for c in cards[:count]], "count": min(len(cards), count), "parts": len(chunks)}


def lesson(ctx) -> dict:
    params = ctx.params
    topic, level, language = params["topic"], params.get("level") or "beginner", params.get("language") or "en"
    context = f"\n\nSource material:\n{params['content'][:CHUNK_CHARS]}" if params.get("content") else ""
    system = {"role": "system", "content": f"You design {level} language lessons in language '{language}'."}
    steps = 3

    def ask(prompt: str, schema, name: str):
        return lambda: complete_structured(
            ctx, [system, {"role": "user", "content": prompt}], schema, name
        ).model_dump()

    outline = Outline.model_validate(
        ctx.step("outline", ask(f"Outline a lesson on: {topic}{context}", Outline, "outline"), of=steps)
    )
    vocabulary = Vocabulary.model_validate(
        ctx.step(
            "vocabulary",
            ask(f"List the key vocabulary for the lesson '{outline.title}' on {topic}.", Vocabulary, "vocabulary"),
            of=steps,
        )
    )
    terms = ", ".join(v.term for v in vocabulary.items)
    exercises = Exercises.model_validate(
        ctx.step(
            "exercises", ask(f"Write exercises for '{outline.title}' using: {terms}", Exercises, "exercises"), of=steps
        )
    )
    return {
        "title": outline.title,
        "objectives": outline.objectives,
        "sections": outline.sections,
        "vocabulary": [v.model_dump() for v in vocabulary.items],
        "exercises": [e.model_dump() for e in exercises.items],
    }
