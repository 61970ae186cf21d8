"""Unilingo v1's design, for comparison only: the provider call inline in the request.

One sequential OpenAI queue (Unilingo v1: "OpenAI: Sequential (1 at a time)"), the HTTP request
held open until the provider answers. Same SDK, same sandbox, same prompt as v2.
"""

from __future__ import annotations

import asyncio
import os

import openai
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from unilingo.settings import get_settings
from workers.handlers.ai import CardSet
from workers.providers.openai_chat import _strict_schema

app = FastAPI()
_openai_queue = asyncio.Lock()
_client = openai.AsyncOpenAI(base_url=get_settings().openai_endpoint(), api_key="sandbox", max_retries=0)


class FlashcardsRequest(BaseModel):
    content: str
    count: int = 10


@app.post("/v1/generate-flashcards")
async def generate(body: FlashcardsRequest):
    async with _openai_queue:
        response = await _client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"Write exactly {body.count} flashcards from:\n\n{body.content}"}],
            max_tokens=800,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "flashcards", "schema": _strict_schema(CardSet), "strict": True},
            },
        )
    return CardSet.model_validate_json(response.choices[0].message.content).model_dump()


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["V1_PORT"]), log_level="warning")
