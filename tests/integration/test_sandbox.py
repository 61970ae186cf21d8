"""The provider sandbox as its users meet it: ``python -m sandbox`` in its own process, reached
over HTTP by the real ``openai`` SDK, ``boto3`` and ``httpx``, with latencies scaled to 1 %."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions
import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field, create_model

from devstack.ports import free_port
from sandbox.content import Topic, instance_for_schema
from sandbox.images import png_with_text
from sandbox.openai_requests import strict_schema_problem
from sandbox.profiles import Quota
from sandbox.quotas import Admitted, ProviderQuota
from tests.clock import FakeClock
from tests.samples import spoken, wav_bytes

ROOT = Path(__file__).resolve().parents[2]
SPEECH_PATH = "/speech/recognition/conversation/cognitiveservices/v1"
AZURE_KEY = {"Ocp-Apim-Subscription-Key": "sandbox"}
WAV_CONTENT_TYPE = "audio/wav; codecs=audio/pcm; samplerate=16000"


@dataclass
class RunningSandbox:
    url: str
    aws_url: str
    process: subprocess.Popen
    # Clients are built once: each new one costs tens of milliseconds (TLS setup, boto3's models).
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))
    _aws_clients: dict = field(default_factory=dict)
    _openai: openai.OpenAI | None = None

    @property
    def openai_url(self) -> str:
        return f"{self.url}/openai/v1"

    @property
    def openai(self) -> openai.OpenAI:
        """The real SDK as the workers configure it: no retries of its own."""
        if self._openai is None:
            self._openai = openai.OpenAI(base_url=self.openai_url, api_key="sandbox", max_retries=0)
        return self._openai

    def stats(self, provider: str) -> dict:
        return self.http.get(f"{self.url}/_sandbox/stats").json()[provider]

    def inject(self, **fault) -> None:
        response = self.http.post(f"{self.url}/_sandbox/faults", json=fault)
        assert response.status_code == 201, response.text

    def aws_client(self, service: str):
        if service not in self._aws_clients:
            self._aws_clients[service] = self._new_aws_client(service)
        return self._aws_clients[service]

    def _new_aws_client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.aws_url,
            region_name="us-east-1",
            aws_access_key_id="sandbox",
            aws_secret_access_key="sandbox",
            config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=5, connect_timeout=2),
        )


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A sandbox process of this module's own, started as a user starts it.

    It deliberately shadows conftest's session-wide ``sandbox``: these tests exhaust quotas,
    inject faults and reset everything between tests, which must not reach the tests that
    share the session's sandbox with real workers.
    """
    port, aws_port = free_port(), free_port()
    log_path = tmp_path_factory.mktemp("sandbox") / "sandbox.log"
    env = {
        **os.environ,
        "SANDBOX_PORT": str(port),
        "SANDBOX_AWS_PORT": str(aws_port),
        "SANDBOX_LATENCY_SCALE": "0.01",
        "SANDBOX_LOG_LEVEL": "warning",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    running = RunningSandbox(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{aws_port}", process)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"the sandbox exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if running.http.get(f"{running.url}/_sandbox/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the sandbox did not become healthy:\n{log_path.read_text()}")
        time.sleep(0.1)
    yield running
    running.http.close()
    process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so the parent sees it.
    assert process.wait(timeout=15) in (0, -signal.SIGTERM), log_path.read_text()


@pytest.fixture(autouse=True)
def fresh_sandbox(sandbox):
    """Each test starts with empty stats, empty quota windows and no faults."""
    sandbox.http.post(f"{sandbox.url}/_sandbox/reset").raise_for_status()


# ---------------------------------------------------------------- helpers


def make_wav(
    bursts: list[float], gap_s: float = 0.3, lead_s: float = 0.2, rate: int = 16_000, channels: int = 1
) -> bytes:
    """Tone bursts (seconds each) separated by silence: speech as a loudness meter sees it."""
    samples = bytearray()

    def silence(seconds: float) -> None:
        samples.extend(b"\x00\x00" * int(seconds * rate) * channels)

    silence(lead_s)
    for index, seconds in enumerate(bursts):
        for n in range(int(seconds * rate)):
            value = int(8000 * math.sin(2 * math.pi * (180 + 40 * index) * n / rate))
            samples.extend(value.to_bytes(2, "little", signed=True) * channels)
        silence(gap_s)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as recording:
        recording.setnchannels(channels)
        recording.setsampwidth(2)
        recording.setframerate(rate)
        recording.writeframes(bytes(samples))
    return buffer.getvalue()


def assessment_header(reference: str, **options) -> str:
    params = {"ReferenceText": reference, "GradingSystem": "HundredMark", "Granularity": "Phoneme", **options}
    return base64.b64encode(json.dumps(params).encode()).decode()


def speech_request(sandbox, audio: bytes, reference: str | None = "hello big world", **options) -> httpx.Response:
    headers = {**AZURE_KEY, "Content-Type": WAV_CONTENT_TYPE}
    if reference is not None:
        headers["Pronunciation-Assessment"] = assessment_header(reference, **options)
    return sandbox.http.post(
        f"{sandbox.url}{SPEECH_PATH}?language=en-US&format=detailed", content=audio, headers=headers
    )


def chat_body(content: str = "Say hello", **extra) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


BEARER = {"Authorization": "Bearer sandbox"}

# ---------------------------------------------------------------- control


def test_health_names_every_provider_and_the_aws_endpoint(sandbox):
    health = sandbox.http.get(f"{sandbox.url}/_sandbox/health").json()
    assert health["status"] == "ok"
    assert health["providers"] == ["openai", "azure-speech", "azure-vision", "aws-polly", "storage"]
    assert health["aws_endpoint"] == sandbox.aws_url
    assert health["latency_scale"] == 0.01


def test_stats_reset_zeroes_the_counters(sandbox):
    sandbox.http.post(f"{sandbox.openai_url}/chat/completions", json=chat_body(), headers=BEARER).raise_for_status()
    assert sandbox.stats("openai")["requests"] == 1
    sandbox.http.post(f"{sandbox.url}/_sandbox/stats/reset").raise_for_status()
    assert sandbox.stats("openai") == {
        "requests": 0,
        "rejected_429": 0,
        "peak_concurrency": 0,
        "in_flight": 0,
        "per_second": {},
        "refusals": [],
    }
    sandbox.http.post(f"{sandbox.openai_url}/chat/completions", json=chat_body(), headers=BEARER).raise_for_status()
    sandbox.http.delete(f"{sandbox.url}/_sandbox/stats").raise_for_status()
    assert sandbox.stats("openai")["requests"] == 0


# ---------------------------------------------------------------- OpenAI


class Card(BaseModel):
    front: str = Field(min_length=1)
    back: str = Field(min_length=1)


class CardSet(BaseModel):
    cards: list[Card]


SOURCE = (
    "The heart pumps blood through arteries and veins. Arteries carry oxygenated blood away from the heart. "
    "Veins return blood to the heart. Capillaries connect arteries and veins. The aorta is the largest artery."
)


def test_openai_sdk_gets_a_schema_valid_structured_answer(sandbox):
    completion = sandbox.openai.chat.completions.parse(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "You write study flashcards about cardiology in language 'en'."},
            {
                "role": "user",
                "content": f"Write exactly 7 flashcards (front: question, back: answer) from:\n\n{SOURCE}",
            },
        ],
        response_format=CardSet,
        max_tokens=1500,
    )
    cards = completion.choices[0].message.parsed.cards
    assert len(cards) == 7
    fronts = [card.front for card in cards]
    assert len(set(fronts)) == 7, "fronts are distinct, as a deduplicating client needs"
    assert {"Heart", "Blood", "Arteries"} <= set(fronts), "terms come from the prompt"
    assert "Arteries carry oxygenated blood" in next(card.back for card in cards if card.front == "Arteries")
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert completion.choices[0].finish_reason == "stop"


def test_openai_structured_answer_respects_item_bounds_and_nested_refs(sandbox):
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "level": {"type": "string", "enum": ["A1", "A2", "B1"]},
            "vocabulary": {
                "type": "array",
                "minItems": 4,
                "maxItems": 6,
                "items": {"$ref": "#/$defs/Entry"},
            },
            "score": {"type": "integer", "minimum": 0, "maximum": 100},
        },
        "required": ["title", "level", "vocabulary", "score"],
        "additionalProperties": False,
        "$defs": {
            "Entry": {
                "type": "object",
                "properties": {
                    "term": {"type": "string"},
                    "translation": {"type": "string"},
                    "example": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                },
                "required": ["term", "translation", "example", "tags"],
                "additionalProperties": False,
            }
        },
    }
    response = sandbox.openai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"Give 12 vocabulary words from this text:\n\n{SOURCE}"}],
        response_format={"type": "json_schema", "json_schema": {"name": "lesson", "strict": True, "schema": schema}},
    )
    answer = json.loads(response.choices[0].message.content)
    jsonschema.validate(answer, schema)
    assert len(answer["vocabulary"]) == 6, "12 requested, clamped to maxItems"


def test_openai_json_object_and_text_answers(sandbox):
    client = sandbox.openai
    json_answer = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "user", "content": 'Answer in JSON like {"words": [{"word": "", "meaning": ""}]}: ' + SOURCE}
        ],
        response_format={"type": "json_object"},
    )
    parsed = json.loads(json_answer.choices[0].message.content)
    assert isinstance(parsed["words"], list) and {"word", "meaning"} <= set(parsed["words"][0])

    text = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": SOURCE}])
    assert "heart" in text.choices[0].message.content.lower()

    short = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": SOURCE}], max_tokens=5
    )
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 5


def test_openai_requires_a_bearer_key(sandbox):
    response = sandbox.http.post(f"{sandbox.openai_url}/chat/completions", json=chat_body())
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert sandbox.http.get(f"{sandbox.openai_url}/models").status_code == 401
    assert [model.id for model in sandbox.openai.models.list()][0] == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"model": "gpt-4o-mini"}, 400, "messages", "missing_required_parameter"),
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model", "missing_required_parameter"),
        (chat_body(messages="hi"), 400, "messages", "invalid_type"),
        (chat_body(messages=[]), 400, "messages", "empty_array"),
        (chat_body(model=4), 400, "model", "invalid_type"),
        (chat_body(max_tokens=0), 400, "max_tokens", "integer_below_min_value"),
        (chat_body(temperature=3), 400, "temperature", "decimal_above_max_value"),
        (chat_body(model="gpt-nonexistent"), 404, None, "model_not_found"),
        (chat_body("x" * 520_000), 400, "messages", "context_length_exceeded"),
        (
            chat_body(
                response_format={
                    "type": "json_schema",
                    "json_schema": {
                        "name": "loose",
                        "strict": True,
                        "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                    },
                }
            ),
            400,
            "response_format",
            "invalid_json_schema",
        ),
    ],
)
def test_openai_validates_requests_like_openai(sandbox, body, status, param, code):
    response = sandbox.http.post(f"{sandbox.openai_url}/chat/completions", json=body, headers=BEARER)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert error["message"]


async def test_openai_51st_request_in_a_minute_gets_429_with_retry_after(sandbox):
    async with httpx.AsyncClient(headers=BEARER, timeout=10) as client:
        answers = await asyncio.gather(
            *(client.post(f"{sandbox.openai_url}/chat/completions", json=chat_body(f"Question {i}")) for i in range(50))
        )
    assert [answer.status_code for answer in answers] == [200] * 50
    assert sorted(int(answer.headers["x-ratelimit-remaining-requests"]) for answer in answers) == list(range(50))

    with pytest.raises(openai.RateLimitError) as raised:
        sandbox.openai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "one more"}])
    headers = raised.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-limit-requests"] == "50"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert {
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    } <= set(headers)
    assert raised.value.body["type"] == "requests" and raised.value.code == "rate_limit_exceeded"

    stats = sandbox.stats("openai")
    assert (stats["requests"], stats["rejected_429"]) == (51, 1)
    per_second = stats["per_second"].values()
    assert sum(second["requests"] for second in per_second) == 51
    assert sum(second["rejected_429"] for second in per_second) == 1
    assert sum(second["tokens"] for second in per_second) > 0
    (refusal,) = stats["refusals"]
    assert (refusal["reason"], refusal["requests_used"]) == ("requests", 50)


def test_a_smaller_account_quota_is_played_and_stated_in_every_answers_headers(sandbox):
    answer = sandbox.http.post(f"{sandbox.url}/_sandbox/quotas", json={"provider": "openai", "requests_per_minute": 3})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "provider": "openai",
        "requests_per_minute": 3,
        "tokens_per_minute": 75_000,
        "max_concurrent": None,
    }
    client = sandbox.openai
    ask = dict(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    remaining = []
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(**ask)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-limit-tokens"] == "75000"
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
        reset = raw.headers["x-ratelimit-reset-requests"]
        assert reset.endswith("s") and reset[0].isdigit(), reset  # "59.98s", "1m0s": OpenAI's durations
    assert remaining == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError, match="Limit 3, Used 3") as raised:  # the played account's figure
        client.chat.completions.create(**ask)
    headers = raised.value.response.headers
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("3", "0")
    assert {"x-ratelimit-reset-requests", "x-ratelimit-limit-tokens", "x-ratelimit-reset-tokens"} <= set(headers)

    # An error answer states the account too, an injected 500 as a bad request.
    sandbox.inject(provider="openai", mode="500", duration_s=30)
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(**ask)
    assert failed.value.response.headers["x-ratelimit-limit-requests"] == "3"
    sandbox.http.delete(f"{sandbox.url}/_sandbox/faults")
    bad = sandbox.http.post(f"{sandbox.openai_url}/chat/completions", json={"model": "gpt-4o-mini"}, headers=BEARER)
    assert bad.status_code == 400 and bad.headers["x-ratelimit-limit-requests"] == "3"

    assert sandbox.http.get(f"{sandbox.url}/_sandbox/quotas").json()["quotas"]["openai"]["requests_per_minute"] == 3
    sandbox.http.post(f"{sandbox.url}/_sandbox/reset").raise_for_status()  # the default account again
    raw = client.chat.completions.with_raw_response.create(**ask)
    assert raw.headers["x-ratelimit-limit-requests"] == "50"


def test_a_quota_may_be_lifted_or_given_to_an_unmetered_provider(sandbox):
    quotas = f"{sandbox.url}/_sandbox/quotas"
    lifted = sandbox.http.post(quotas, json={"provider": "openai", "tokens_per_minute": 0}).json()
    assert (lifted["requests_per_minute"], lifted["tokens_per_minute"]) == (50, None)
    raw = sandbox.openai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert "x-ratelimit-limit-tokens" not in raw.headers and raw.headers["x-ratelimit-limit-requests"] == "50"
    polly = sandbox.http.post(quotas, json={"provider": "aws-polly", "requests_per_minute": 2}).json()
    assert polly["requests_per_minute"] == 2
    assert sandbox.http.delete(quotas).json()["quotas"]["aws-polly"]["requests_per_minute"] is None


@pytest.mark.parametrize(
    "body, complaint",
    [
        ({"provider": "openai"}, "requests_per_minute, tokens_per_minute or both"),
        ({"provider": "nope", "requests_per_minute": 3}, "unknown provider"),
        ({"provider": "openai", "requests_per_minute": -1}, "requests_per_minute"),
        ({"provider": "openai", "rpm": 3}, "rpm"),
    ],
)
def test_invalid_quota_bodies_are_refused_with_a_clear_message(sandbox, body, complaint):
    answer = sandbox.http.post(f"{sandbox.url}/_sandbox/quotas", json=body)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid_quota" and complaint in answer.json()["error"]["message"]
    not_json = sandbox.http.post(f"{sandbox.url}/_sandbox/quotas", content=b"{")
    assert (not_json.status_code, not_json.json()["error"]["code"]) == (400, "invalid_json")


def test_openai_token_quota_counts_prompt_and_max_tokens(sandbox):
    client = sandbox.openai
    remaining = []
    for _ in range(4):  # 4 x (prompt + 16,000) fits in 75,000 tokens a minute...
        response = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Explain the heart."}], max_tokens=16_000
        )
        remaining.append(int(response.headers["x-ratelimit-remaining-tokens"]))
    assert remaining[0] == 75_000 - (16_000 + len("Explain the heart.") // 4 + 1)
    assert remaining == sorted(remaining, reverse=True) and remaining[-1] < 16_000

    with pytest.raises(openai.RateLimitError) as raised:  # ...a fifth does not
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Explain the heart."}], max_tokens=16_000
        )
    assert raised.value.body["type"] == "tokens"
    assert int(raised.value.response.headers["retry-after"]) >= 1
    assert sandbox.stats("openai")["rejected_429"] == 1

    with pytest.raises(openai.RateLimitError, match="Request too large"):  # more than a minute's worth
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=16_000, n=5
        )


def test_openai_streams_chunks_through_the_sdk(sandbox):
    stream = sandbox.openai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": SOURCE}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert "heart" in text.lower()
    assert chunks[-1].usage.completion_tokens > 0
    assert sandbox.stats("openai")["in_flight"] == 0


# ---------------------------------------------------------------- Azure Speech


def test_speech_assessment_is_detailed_deterministic_and_graded(sandbox):
    reference = "my brother plays football"
    audio = wav_bytes(spoken(reference))
    first = speech_request(sandbox, audio, reference)
    assert first.status_code == 200, first.text
    assert first.headers["X-Sandbox-Recognizer"] == "pocketsphinx-en-us"
    result = first.json()
    assert result["RecognitionStatus"] == "Success"
    best = result["NBest"][0]
    for score in ("AccuracyScore", "FluencyScore", "CompletenessScore", "PronScore"):
        assert 0 <= best[score] <= 100
    assert [word["Word"] for word in best["Words"]] == reference.split()
    assert all(word["ErrorType"] in ("None", "Mispronunciation") for word in best["Words"])
    assert all(word["Phonemes"] for word in best["Words"] if word["Duration"])
    offsets = [word["Offset"] for word in best["Words"] if word["Duration"]]
    assert offsets == sorted(offsets) and offsets[0] >= 2_000_000  # after the 0.2 s lead-in, in 100 ns ticks
    assert best["Lexical"] == reference  # what PocketSphinx heard in espeak-ng's recording
    assert speech_request(sandbox, audio, reference).json() == result, "same audio and text, same scores"

    five_point = speech_request(sandbox, audio, reference, GradingSystem="FivePoint").json()
    assert 0 <= five_point["NBest"][0]["PronScore"] <= 5


def test_speech_assessment_listens_to_what_was_said(sandbox):
    """The same reference scores clearly lower for a recording of another sentence."""
    reference = "my brother plays football"
    itself = speech_request(sandbox, wav_bytes(spoken(reference)), reference, EnableMiscue=True).json()["NBest"][0]
    other = speech_request(sandbox, wav_bytes(spoken("we are going to the park")), reference, EnableMiscue=True).json()[
        "NBest"
    ][0]
    # What the engine heard, not the reference: the sentence itself, and none of it for the other.
    assert len(set(itself["Lexical"].split()) & set(reference.split())) >= 3, itself["Lexical"]
    assert not set(other["Lexical"].split()) & set(reference.split()), other["Lexical"]
    for score in ("AccuracyScore", "CompletenessScore", "PronScore"):
        assert other[score] <= itself[score] - 30, (score, itself[score], other[score])
    errors = [word["ErrorType"] for word in other["Words"]]
    assert errors.count("Omission") >= 3 and "Insertion" in errors


def test_speech_miscue_marks_omissions_and_insertions(sandbox):
    reference = "my brother plays football every day after school"
    stopped_early = speech_request(
        sandbox, wav_bytes(spoken("my brother plays football")), reference, EnableMiscue=True
    )
    best = stopped_early.json()["NBest"][0]
    errors = [word["ErrorType"] for word in best["Words"]]
    assert errors[-3:] == ["Omission"] * 3 and errors[0] != "Omission", errors
    assert best["CompletenessScore"] <= 65

    rambled = speech_request(sandbox, wav_bytes(spoken("my brother plays football")), "football", EnableMiscue=True)
    assert "Insertion" in [word["ErrorType"] for word in rambled.json()["NBest"][0]["Words"]]


def test_speech_without_a_model_falls_back_to_voice_activity(sandbox):
    """German has no recognition model: the scores come from voice activity, and say so."""
    audio = wav_bytes(spoken("wir gehen heute in den park", voice="de"))
    answer = sandbox.http.post(
        f"{sandbox.url}{SPEECH_PATH}?language=de-DE&format=detailed",
        content=audio,
        headers={
            **AZURE_KEY,
            "Content-Type": WAV_CONTENT_TYPE,
            "Pronunciation-Assessment": assessment_header("wir gehen heute in den park"),
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Sandbox-Recognizer"] == "voice-activity"
    best = answer.json()["NBest"][0]
    assert [word["Word"] for word in best["Words"]] == "wir gehen heute in den park".split()
    assert best["CompletenessScore"] == 100


def test_speech_silence_and_unusable_audio(sandbox):
    long_silence = speech_request(sandbox, make_wav([], lead_s=6.0)).json()
    assert long_silence["RecognitionStatus"] == "InitialSilenceTimeout"
    assert speech_request(sandbox, make_wav([], lead_s=1.0)).json()["RecognitionStatus"] == "NoMatch"

    assert speech_request(sandbox, b"RIFF....not really a wav").status_code == 400
    stereo = speech_request(sandbox, make_wav([0.5], channels=2))
    assert stereo.status_code == 400 and "mono" in stereo.json()["error"]["message"]
    no_key = sandbox.http.post(
        f"{sandbox.url}{SPEECH_PATH}?language=en-US",
        content=make_wav([0.5]),
        headers={"Content-Type": WAV_CONTENT_TYPE},
    )
    assert no_key.status_code == 401
    no_language = sandbox.http.post(
        f"{sandbox.url}{SPEECH_PATH}", content=make_wav([0.5]), headers={**AZURE_KEY, "Content-Type": WAV_CONTENT_TYPE}
    )
    assert no_language.status_code == 400


async def test_speech_allows_20_concurrent_calls_and_refuses_the_21st(sandbox):
    # Half a second more per call makes the 21 calls overlap on any machine.
    sandbox.inject(provider="azure-speech", mode="slow", duration_s=30, delay_s=0.5)
    audio = make_wav([0.4])
    headers = {**AZURE_KEY, "Content-Type": WAV_CONTENT_TYPE, "Pronunciation-Assessment": assessment_header("hello")}
    async with httpx.AsyncClient(timeout=10) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    f"{sandbox.url}{SPEECH_PATH}?language=en-US&format=detailed", content=audio, headers=headers
                )
                for _ in range(21)
            )
        )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 20 + [429]
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "429"
    stats = sandbox.stats("azure-speech")
    assert (stats["requests"], stats["rejected_429"], stats["peak_concurrency"]) == (21, 1, 20)


# ---------------------------------------------------------------- Azure Vision


def read_image(sandbox, image: bytes, language: str | None = None) -> dict:
    submitted = sandbox.http.post(
        f"{sandbox.url}/vision/v3.2/read/analyze",
        content=image,
        params={"language": language} if language else {},
        headers={**AZURE_KEY, "Content-Type": "application/octet-stream"},
    )
    assert submitted.status_code == 202, submitted.text
    location = submitted.headers["Operation-Location"]
    assert location.startswith(f"{sandbox.url}/vision/v3.2/read/analyzeResults/")
    seen = []
    deadline = time.monotonic() + 60  # Tesseract reads a small image in about a second, on a busy machine more
    while time.monotonic() < deadline:
        answer = sandbox.http.get(location, headers=AZURE_KEY)
        assert answer.status_code == 200, answer.text
        result = answer.json()
        seen.append(result["status"])
        if result["status"] in ("succeeded", "failed"):
            return result
        time.sleep(float(answer.headers.get("Retry-After", 0.05)))
    pytest.fail(f"the read operation never finished: {seen[-5:]}")


def test_vision_reads_the_text_drawn_in_an_image(sandbox):
    result = read_image(sandbox, png_with_text(400, 200, "Hola mundo\nBuenos días, señor"), language="es")
    assert result["status"] == "succeeded"
    page = result["analyzeResult"]["readResults"][0]
    assert (page["page"], page["width"], page["height"], page["unit"]) == (1, 400, 200, "pixel")
    assert [line["text"] for line in page["lines"]] == ["Hola mundo", "Buenos días, señor"]
    words = page["lines"][1]["words"]
    assert [word["text"] for word in words] == ["Buenos", "días,", "señor"]
    assert all(len(word["boundingBox"]) == 8 and 0 < word["confidence"] <= 1 for word in words)
    assert all(0 <= x <= 400 for x in page["lines"][1]["boundingBox"][::2])

    assert read_image(sandbox, png_with_text(120, 80))["analyzeResult"]["readResults"][0]["lines"] == []
    damaged = png_with_text(120, 80, "x")[:12] + b"JUNK" + b"\x00" * 40
    assert read_image(sandbox, damaged)["status"] == "failed"


PAGE = [
    "The weather is nice today",
    "We are going to the park",
    "My brother plays football",
]


def drawn_page(image_format: str) -> bytes:
    """A page of text drawn here with Pillow, as a photographed worksheet would show it."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (900, 320), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 40)
    for row, line in enumerate(PAGE):
        draw.text((40, 40 + row * 90), line, font=font, fill=(20, 20, 20))
    out = io.BytesIO()
    image.save(out, format=image_format)
    return out.getvalue()


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_vision_ocr_returns_the_words_of_an_image_drawn_in_the_test(sandbox, image_format):
    result = read_image(sandbox, drawn_page(image_format))
    assert result["status"] == "succeeded", result
    lines = result["analyzeResult"]["readResults"][0]["lines"]
    expected = [word.lower() for line in PAGE for word in line.split()]
    read = [word["text"].lower() for line in lines for word in line["words"]]
    matched = sum(1 for word in expected if word in read)
    assert matched >= 0.9 * len(expected), (read, expected)
    assert [line["text"] for line in lines] == PAGE  # clean print reads exactly
    first = lines[0]["words"][0]
    x1, y1, _, _, x2, y2, _, _ = first["boundingBox"]
    assert 30 <= x1 < x2 <= 200 and 30 <= y1 < y2 <= 100  # "The", where it was drawn
    assert all(0.5 < word["confidence"] <= 1 for line in lines for word in line["words"])


def decoded(audio: bytes, kind: str) -> tuple[bytes, float]:
    """sox decodes what Polly sent: (16 kHz 16-bit mono WAV, duration in seconds)."""
    source = (
        ["-t", "raw", "-r", "16000", "-e", "signed-integer", "-b", "16", "-c", "1", "-L"]
        if kind == "pcm"
        else ["-t", kind]
    )
    raw = subprocess.run(
        [
            "sox",
            "-q",
            "-D",
            *source,
            "-",
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
            "-L",
            "-",
        ],
        input=audio,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert raw, "sox decoded no audio"
    out = io.BytesIO()
    with wave.open(out, "wb") as recording:
        recording.setnchannels(1)
        recording.setsampwidth(2)
        recording.setframerate(16000)
        recording.writeframes(raw)
    return out.getvalue(), len(raw) / 32000


@pytest.mark.parametrize("output_format, kind", [("mp3", "mp3"), ("ogg_vorbis", "ogg"), ("pcm", "pcm")])
def test_polly_speech_plays_lasts_as_long_as_the_text_and_says_it(sandbox, output_format, kind):
    text = "We are going to the park today"
    speech = sandbox.aws_client("polly").synthesize_speech(Text=text, OutputFormat=output_format, VoiceId="Joanna")
    audio = speech["AudioStream"].read()
    wav, duration_s = decoded(audio, kind)
    # Speech runs at about 14 characters a second (Polly's voices too): 8-20 allows any voice.
    assert len(text) / 20 <= duration_s <= len(text) / 8, duration_s
    heard = speech_request(sandbox, wav, text).json()
    assert heard["RecognitionStatus"] == "Success", heard
    words = set(heard["NBest"][0]["Lexical"].split())
    assert len(words & set(text.lower().split())) >= 5, heard["NBest"][0]["Lexical"]


def test_polly_voices_speak_their_own_language(sandbox):
    polly = sandbox.aws_client("polly")
    german = polly.synthesize_speech(Text="Guten Morgen", OutputFormat="pcm", VoiceId="Vicki")["AudioStream"].read()
    english = polly.synthesize_speech(Text="Guten Morgen", OutputFormat="pcm", VoiceId="Joanna")["AudioStream"].read()
    assert german and english and german != english  # espeak-ng's German voice, not its English one
    with pytest.raises(botocore.exceptions.ClientError) as unknown:
        polly.synthesize_speech(Text="hi", OutputFormat="mp3", VoiceId="Nobody")
    assert unknown.value.response["Error"]["Code"] == "InvalidParameterValue"  # moto's validation still answers


def test_vision_rejects_what_is_not_an_image(sandbox):
    def analyze(content: bytes, headers=AZURE_KEY) -> httpx.Response:
        return sandbox.http.post(f"{sandbox.url}/vision/v3.2/read/analyze", content=content, headers=headers)

    not_image = analyze(b"%PDF-1.7 this is not an image")
    assert not_image.status_code == 400 and not_image.json()["error"]["code"] == "InvalidImageFormat"
    assert analyze(png_with_text(20, 20)).json()["error"]["code"] == "InvalidImageDimension"
    assert analyze(png_with_text(100, 100), headers={}).status_code == 401


def test_vision_free_tier_allows_20_calls_a_minute(sandbox):
    image = png_with_text(100, 100, "hi")
    statuses = [
        sandbox.http.post(f"{sandbox.url}/vision/v3.2/read/analyze", content=image, headers=AZURE_KEY).status_code
        for _ in range(21)
    ]
    assert statuses == [202] * 20 + [429]
    stats = sandbox.stats("azure-vision")
    assert (stats["requests"], stats["rejected_429"]) == (21, 1)


# ---------------------------------------------------------------- AWS through moto


def test_boto3_polly_and_s3_are_served_and_counted(sandbox):
    polly = sandbox.aws_client("polly")
    speech = polly.synthesize_speech(Text="Hola, ¿qué tal?", OutputFormat="mp3", VoiceId="Lucia")
    audio = speech["AudioStream"].read()
    assert speech["ContentType"] == "audio/mpeg" and speech["RequestCharacters"] == len("Hola, ¿qué tal?")
    assert audio[:3] == b"ID3" or audio[0] == 0xFF  # an MP3 stream (tag or frame sync)

    s3 = sandbox.aws_client("s3")
    s3.create_bucket(Bucket="audio-lessons")
    s3.put_object(Bucket="audio-lessons", Key="lesson-1.mp3", Body=audio)
    assert s3.get_object(Bucket="audio-lessons", Key="lesson-1.mp3")["Body"].read() == audio
    presigned = s3.generate_presigned_url("get_object", Params={"Bucket": "audio-lessons", "Key": "lesson-1.mp3"})
    assert sandbox.http.get(presigned).content == audio

    assert sandbox.stats("aws-polly")["requests"] == 1
    assert sandbox.stats("storage")["requests"] == 4


# ---------------------------------------------------------------- faults


def test_fault_429_makes_the_sdk_raise_rate_limit_error_until_cleared(sandbox):
    sandbox.inject(provider="openai", mode="429", duration_s=30)
    client = sandbox.openai
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert 25 <= int(raised.value.response.headers["retry-after"]) <= 30, "a total outage says how long it lasts"
    assert sandbox.stats("openai")["rejected_429"] == 1

    assert sandbox.http.delete(f"{sandbox.url}/_sandbox/faults").json() == {"cleared": 1}
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def test_faults_answer_in_each_providers_own_shape(sandbox):
    for provider in ("openai", "azure-vision", "aws-polly", "storage"):
        sandbox.inject(provider=provider, mode="500", duration_s=30)
    with pytest.raises(openai.InternalServerError):
        sandbox.openai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    vision = sandbox.http.post(
        f"{sandbox.url}/vision/v3.2/read/analyze", content=png_with_text(100, 100), headers=AZURE_KEY
    )
    assert vision.status_code == 500 and vision.json()["error"]["code"] == "InternalServerError"
    with pytest.raises(botocore.exceptions.ClientError) as polly_failure:
        sandbox.aws_client("polly").synthesize_speech(Text="hi", OutputFormat="mp3", VoiceId="Joanna")
    assert polly_failure.value.response["Error"]["Code"] == "ServiceFailureException"
    with pytest.raises(botocore.exceptions.ClientError) as s3_failure:
        sandbox.aws_client("s3").list_buckets()
    assert s3_failure.value.response["Error"]["Code"] == "InternalError"

    sandbox.http.delete(f"{sandbox.url}/_sandbox/faults").raise_for_status()
    for provider in ("aws-polly", "storage"):
        sandbox.inject(provider=provider, mode="429", duration_s=30)
    with pytest.raises(botocore.exceptions.ClientError) as throttled:
        sandbox.aws_client("polly").synthesize_speech(Text="hi", OutputFormat="mp3", VoiceId="Joanna")
    assert throttled.value.response["Error"]["Code"] == "ThrottlingException"
    with pytest.raises(botocore.exceptions.ClientError) as slow_down:
        sandbox.aws_client("s3").list_buckets()
    assert slow_down.value.response["Error"]["Code"] == "SlowDown"
    assert slow_down.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert sandbox.stats("aws-polly")["rejected_429"] == 1 and sandbox.stats("storage")["rejected_429"] == 1


def test_fault_timeout_holds_the_request_then_hangs_up(sandbox):
    sandbox.inject(provider="openai", mode="timeout", duration_s=30, delay_s=0.3)
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        sandbox.http.post(f"{sandbox.openai_url}/chat/completions", json=chat_body(), headers=BEARER, timeout=5)
    assert time.monotonic() - started >= 0.3
    with pytest.raises(openai.APIConnectionError):
        sandbox.openai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.APITimeoutError):  # a client that gives up first sees its own timeout
        sandbox.openai.with_options(timeout=0.1).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )

    sandbox.inject(provider="storage", mode="timeout", duration_s=30, delay_s=0.3)
    with pytest.raises((botocore.exceptions.ConnectionClosedError, botocore.exceptions.EndpointConnectionError)):
        sandbox.aws_client("s3").list_buckets()
    assert sandbox.http.get(f"{sandbox.url}/_sandbox/health").status_code == 200, "the sandbox itself stays up"


def test_fault_slow_adds_its_delay(sandbox):
    sandbox.inject(provider="azure-speech", mode="slow", duration_s=30, delay_s=0.4)
    started = time.monotonic()
    assert speech_request(sandbox, make_wav([0.3])).status_code == 200
    assert time.monotonic() - started >= 0.4


def test_fault_rate_affects_that_fraction_and_the_fault_expires(sandbox):
    # Long enough that six requests fit inside the fault even on a busy machine.
    sandbox.inject(provider="azure-vision", mode="500", duration_s=4.0, rate=0.5)

    def analyze() -> int:
        image = png_with_text(100, 100)
        return sandbox.http.post(
            f"{sandbox.url}/vision/v3.2/read/analyze", content=image, headers=AZURE_KEY
        ).status_code

    assert sorted(analyze() for _ in range(6)) == [202, 202, 202, 500, 500, 500]
    time.sleep(4.1)
    assert sandbox.http.get(f"{sandbox.url}/_sandbox/faults").json() == {"faults": []}
    assert analyze() == 202


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"provider": "openai", "mode": "explode", "duration_s": 5}, "mode"),
        ({"provider": "nobody", "mode": "429", "duration_s": 5}, "unknown provider"),
        ({"provider": "openai", "mode": "429"}, "duration_s"),
        ({"provider": "openai", "mode": "429", "duration_s": 5, "rate": 2}, "rate"),
        ({"provider": "openai", "mode": "500", "duration_s": 5, "delay_s": 3}, "delay_s"),
        ({"provider": "openai", "mode": "slow", "duration_s": 5, "colour": "red"}, "colour"),
        ("not json at all", "JSON"),
    ],
)
def test_invalid_fault_bodies_are_refused_with_a_clear_message(sandbox, body, complaint):
    if isinstance(body, str):
        response = sandbox.http.post(f"{sandbox.url}/_sandbox/faults", content=body)
    else:
        response = sandbox.http.post(f"{sandbox.url}/_sandbox/faults", json=body)
    assert response.status_code in (400, 422)
    assert complaint in response.json()["error"]["message"]
    assert sandbox.http.get(f"{sandbox.url}/_sandbox/faults").json() == {"faults": []}


def test_status_code_faults_may_be_given_as_numbers(sandbox):
    response = sandbox.http.post(
        f"{sandbox.url}/_sandbox/faults", json={"provider": "storage", "mode": 429, "duration_s": 5}
    )
    assert response.status_code == 201 and response.json()["mode"] == "429"


# ---------------------------------------------------------------- in-process: the mechanisms themselves


def test_rolling_window_never_lets_any_60_s_span_exceed_the_quota():
    clock = FakeClock()
    quota = ProviderQuota(Quota(requests_per_window=50, tokens_per_window=75_000), clock)
    admitted_at = []
    for second in range(200):  # one request every second, twice over the quota's pace...
        for _ in range(2):
            clock.now = 1_000.0 + second
            verdict = quota.admit(tokens=100)
            if isinstance(verdict, Admitted):
                admitted_at.append(clock.now)
                quota.release(verdict.slot)
            else:
                assert verdict.limit == "requests" and verdict.retry_after_s >= 1
    # ...and no window of 60 s ever held more than 50 of them.
    assert max(sum(1 for t in admitted_at if start <= t < start + 60) for start in admitted_at) == 50

    clock.now += 60
    assert isinstance(quota.admit(tokens=74_000), Admitted)
    refused = quota.admit(tokens=2_000)
    assert (refused.limit, refused.retry_after_s) == ("tokens", 60)
    assert quota.admit(tokens=80_000).retry_after_s is None, "more than a window's worth never fits"


def test_concurrency_refusal_says_when_the_first_slot_frees():
    clock = FakeClock()
    quota = ProviderQuota(Quota(max_concurrent=2), clock)
    first = quota.admit(expected_s=3.2)
    quota.admit(expected_s=9.0)
    refused = quota.admit()
    assert (refused.limit, refused.retry_after_s) == ("concurrency", 4)
    quota.release(first.slot)
    assert isinstance(quota.admit(), Admitted)


WORKER_LIKE_SCHEMAS = {
    "cards": ({"cards": (list[Card], ...)}, "Write exactly 9 flashcards from:\n\n" + SOURCE, ("cards", 9)),
    "outline": (
        {"title": (str, ...), "objectives": (list[str], ...), "sections": (list[str], ...)},
        "Outline a lesson on the heart with 4 objectives and 3 sections.",
        ("sections", 3),
    ),
    "nested": (
        {"units": (list[CardSet], Field(..., min_length=2, max_length=2)), "level": (int, Field(..., ge=1, le=5))},
        SOURCE,
        ("units", 2),
    ),
}


@pytest.mark.parametrize("name", WORKER_LIKE_SCHEMAS)
def test_structured_answers_validate_against_strict_pydantic_schemas(name):
    fields, prompt, (array, length) = WORKER_LIKE_SCHEMAS[name]
    model = create_model(name.title(), **fields)
    schema = openai.lib._pydantic.to_strict_json_schema(model)
    assert strict_schema_problem(schema) is None
    answer = instance_for_schema(schema, Topic.from_prompt("You write about cardiology.", prompt), seed=7)
    jsonschema.validate(answer, schema)
    model.model_validate(answer)
    assert len(answer[array]) == length
