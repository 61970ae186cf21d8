"""Each provider adapter through its real SDK or client against the sandbox subprocess.

Azure Speech through ``azure-cognitiveservices-speech`` over ``ws://`` (the sandbox speaks
the SDK's websocket protocol), Azure Vision's Read API through httpx, Polly and S3 through
boto3 against moto. Handlers run with a real ``JobContext`` on real Redis with the real
limiter; provider errors come from the sandbox's fault injection and from bad input.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import httpx
import pytest
import redis

from devstack.processes import wait_until
from sandbox.images import png_with_text
from tests.samples import speech_like, spoken, wav_bytes
from tests.support.jobs import submit
from tests.support.providers import configure, job_context, reset_process_caches
from unilingo.errors import Deferred, PermanentError, Throttled, TransientError
from unilingo.jobs import JobStatus, JobStore, JobType
from workers.handlers import ai, ocr, speech, tts
from workers.runner import JobContext

# ----------------------------------------------------------------------------- helpers


def silence(seconds: float, rate: int = 16_000) -> list[int]:
    return [0] * int(seconds * rate)


@pytest.fixture
def providers(sandbox_reset, redis_url, monkeypatch):
    handle = configure(monkeypatch, sandbox_reset, redis_url)
    yield handle
    handle.clear()
    monkeypatch.undo()
    reset_process_caches()


# ----------------------------------------------------------------------------- Azure Speech


def test_pronunciation_assessed_through_the_sdk_over_websocket(providers, redis_url):
    reference = "My brother plays football"
    ctx = job_context(
        redis_url, JobType.PRONUNCIATION, {"reference_text": reference, "language": "en"}, wav_bytes(spoken(reference))
    )
    result = speech.pronunciation(ctx)
    scores = result["scores"]
    assert set(scores) == {"accuracy", "fluency", "completeness", "pronunciation"}
    assert all(0 <= v <= 100 for v in scores.values()), scores
    assert result["language"] == "en-US"
    assert [w["word"] for w in result["words"]] == reference.lower().split()
    assert all(w["phonemes"] for w in result["words"] if w["error_type"] != "Omission")  # phoneme granularity
    assert result["recognized_text"].lower().rstrip(".") == reference.lower()  # heard, not copied
    assert scores["completeness"] == 100
    assert {e["error_type"] for e in result["errors"]} <= {"Mispronunciation", "Omission", "Insertion"}
    assert providers.requests("azure-speech") == 1
    # Deterministic: the same recording scores the same.
    again = speech.pronunciation(
        job_context(redis_url, JobType.PRONUNCIATION, {"reference_text": reference}, wav_bytes(spoken(reference)))
    )
    assert again["scores"] == scores


def test_stopping_early_is_an_omission_and_lowers_completeness(providers, redis_url):
    reference = "one two three four five six seven eight nine ten eleven twelve"
    ctx = job_context(
        redis_url,
        JobType.PRONUNCIATION,
        {"reference_text": reference, "language": "en-US"},
        wav_bytes(speech_like(0.6, rate=8_000), rate=8_000),
    )
    result = speech.pronunciation(ctx)
    assert result["scores"]["completeness"] < 100
    assert result["error_counts"].get("Omission", 0) >= 1
    assert any(e["error_type"] == "Omission" for e in result["errors"])


def test_stereo_48k_audio_is_mixed_down_and_assessed(providers, redis_url):
    mono = spoken("my brother plays football", rate=48_000)
    stereo = [s for sample in mono for s in (sample, sample)]
    ctx = job_context(
        redis_url,
        JobType.PRONUNCIATION,
        {"reference_text": "my brother plays football"},
        wav_bytes(stereo, rate=48_000, channels=2),
    )
    assert speech.pronunciation(ctx)["scores"]["completeness"] == 100


def test_silence_fails_as_silent_audio_before_any_provider_call(providers, redis_url):
    ctx = job_context(redis_url, JobType.PRONUNCIATION, {"reference_text": "hello"}, wav_bytes(silence(1.0)))
    with pytest.raises(PermanentError) as err:
        speech.pronunciation(ctx)
    assert err.value.code == "silent_audio"
    assert providers.requests("azure-speech") == 0


def test_8_bit_pcm_is_decoded_and_assessed(providers, redis_url):
    ctx = job_context(
        redis_url, JobType.PRONUNCIATION, {"reference_text": "hello there"}, wav_bytes(speech_like(1.0), width=1)
    )
    assert speech.pronunciation(ctx)["audio_codec"] == "pcm_u8"


@pytest.mark.parametrize(
    "audio",
    [
        b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb" * 200,  # an MP3 header and no frames
        b"OggS" + b"\x00" * 100,
    ],
)
def test_undecodable_audio_fails_before_any_provider_call(providers, redis_url, audio):
    ctx = job_context(redis_url, JobType.PRONUNCIATION, {"reference_text": "hello"}, audio)
    with pytest.raises(PermanentError) as err:
        speech.pronunciation(ctx)
    assert err.value.code == "undecodable_audio"
    assert providers.requests("azure-speech") == 0


@pytest.mark.parametrize("mode, expected", [("429", Throttled), ("500", TransientError)])
def test_speech_refusals_map_to_our_errors(providers, redis_url, mode, expected):
    providers.fault("azure-speech", mode)
    ctx = job_context(redis_url, JobType.PRONUNCIATION, {"reference_text": "hello"}, wav_bytes(speech_like(0.5)))
    with pytest.raises(expected) as err:
        speech.pronunciation(ctx)
    if expected is Throttled:
        assert err.value.provider == "azure-speech"
    else:
        assert not isinstance(err.value, Deferred)
    assert providers.requests("azure-speech") == 1  # the SDK's own reconnection attempts are off


def test_speech_timeout_is_transient_and_bounded(providers, redis_url, monkeypatch):
    monkeypatch.setenv("AZURE_SPEECH_TIMEOUT_SECONDS", "1.5")
    reset_process_caches()
    providers.fault("azure-speech", "timeout", delay_s=20)
    ctx = job_context(redis_url, JobType.PRONUNCIATION, {"reference_text": "hello"}, wav_bytes(speech_like(0.5)))
    started = time.monotonic()
    with pytest.raises(TransientError) as err:
        speech.pronunciation(ctx)
    assert err.value.code == "provider_timeout"
    assert time.monotonic() - started < 5


def test_unreachable_speech_endpoint_is_a_connection_failure(providers, redis_url, monkeypatch):
    from devstack.ports import free_port

    monkeypatch.setenv("AZURE_SPEECH_HOST", f"ws://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AZURE_SPEECH_TIMEOUT_SECONDS", "30")  # the SDK's own failure must come first
    reset_process_caches()
    ctx = job_context(redis_url, JobType.PRONUNCIATION, {"reference_text": "hello"}, wav_bytes(speech_like(0.5)))
    with pytest.raises(TransientError) as err:
        speech.pronunciation(ctx)
    assert "ConnectionFailure" in err.value.message


# ----------------------------------------------------------------------------- Azure Vision


def test_ocr_reads_lines_and_words_with_boxes(providers, redis_url):
    image = png_with_text(640, 240, "Der Hund schläft\nDie Katze spielt im Garten")
    ctx = job_context(redis_url, JobType.OCR, {"language": "de-DE"}, image)
    result = ocr.read_image(ctx)
    assert result["text"] == "Der Hund schläft\nDie Katze spielt im Garten"
    assert result["line_count"] == 2 and result["word_count"] == 8
    line = result["pages"][0]["lines"][1]
    assert len(line["bounding_box"]) == 8
    assert [w["text"] for w in line["words"]] == ["Die", "Katze", "spielt", "im", "Garten"]
    assert all(len(w["bounding_box"]) == 8 and 0 < w["confidence"] <= 1 for w in line["words"])
    assert providers.requests("azure-vision") >= 2  # the submit and at least one poll
    operation = ctx.store.get(ctx.job.job_id).progress["operation"]
    assert operation and "/" not in operation  # the operation's id, not the provider's address


@pytest.mark.parametrize(
    "job_type, params, upload",
    [
        (JobType.OCR, {}, png_with_text(320, 120, "Bonjour")),
        (JobType.TTS, {"text": "Hola", "language": "es"}, None),
        (JobType.FLASHCARDS, {"content": "The Danube flows into the Black Sea.", "count": 1}, None),
    ],
)
def test_each_permit_learns_when_its_request_actually_left(providers, redis_url, monkeypatch, job_type, params, upload):
    """The limiter's window follows the provider's count: from the send, not from the grant."""
    ctx = job_context(redis_url, job_type, params, upload)
    granted = ctx.provider_call
    handles = []

    @contextmanager
    def stalling(provider, tokens=0):
        with granted(provider, tokens) as handle:
            time.sleep(0.3)  # the process stalls between the grant and the SDK call
            yield handle
            handles.append(handle)

    monkeypatch.setattr(ctx, "provider_call", stalling)
    {JobType.OCR: ocr.read_image, JobType.TTS: tts.synthesize, JobType.FLASHCARDS: ai.flashcards}[job_type](ctx)
    assert handles and all(0.3 <= h.sent_after < 5 for h in handles), [h.sent_after for h in handles]


def test_ocr_resumes_a_started_operation_instead_of_paying_again(providers, redis_url):
    image = png_with_text(320, 120, "Bonjour")
    first = job_context(redis_url, JobType.OCR, {}, image)
    ocr.read_image(first)
    # The same job delivered again (after a deferral, a retry or a lost worker).
    store = first.store
    job = store.get(first.job.job_id)
    before = providers.stats()["azure-vision"]["requests"]
    again = JobContext(
        job=job, store=store, run_token=first.run_token, limiter=first.limiter, heartbeat=first.heartbeat
    )
    assert ocr.read_image(again)["text"] == "Bonjour"
    assert providers.stats()["azure-vision"]["requests"] == before + 1  # one poll, no new analysis


def test_image_without_text_fails_with_no_text(providers, redis_url):
    ctx = job_context(redis_url, JobType.OCR, {}, png_with_text(200, 200, None))
    with pytest.raises(PermanentError) as err:
        ocr.read_image(ctx)
    assert err.value.code == "no_text"


def test_not_an_image_is_refused_once(providers, redis_url):
    ctx = job_context(redis_url, JobType.OCR, {}, b"%PDF-1.4 not an image at all")
    with pytest.raises(PermanentError) as err:
        ocr.read_image(ctx)
    assert err.value.code == "unsupported_image"
    assert providers.requests("azure-vision") == 0  # refused before the call


@pytest.mark.parametrize(
    "mode, expected, code",
    [
        ("429", Throttled, None),
        ("500", TransientError, "provider_error"),
        ("timeout", TransientError, None),
    ],
)
def test_vision_faults_map_to_our_errors(providers, redis_url, mode, expected, code):
    providers.fault("azure-vision", mode, **({"delay_s": 0.2} if mode == "timeout" else {}))
    ctx = job_context(redis_url, JobType.OCR, {}, png_with_text(200, 100, "Hola"))
    with pytest.raises(expected) as err:
        ocr.read_image(ctx)
    if code:
        assert err.value.code == code
    if expected is Throttled:
        assert err.value.provider == "azure-vision" and err.value.retry_after >= 1


# ----------------------------------------------------------------------------- AWS Polly + S3


def test_tts_synthesises_stores_and_signs(providers, redis_url):
    ctx = job_context(redis_url, JobType.TTS, {"text": "Hola, ¿qué tal?", "language": "es"})
    result = tts.synthesize(ctx)
    assert result["voice"] == "Lucia" and result["language"] == "es-ES" and result["text_type"] == "text"
    assert result["bucket"] == "unilingo-audio" and result["key"] == f"tts/{ctx.job.job_id}.mp3"  # no user id
    assert "X-Amz-Signature" in result["audio_url"] and result["expires_at"] > time.time()
    fetched = httpx.get(result["audio_url"], timeout=10)
    assert fetched.status_code == 200 and len(fetched.content) == result["bytes"] > 0
    stats = providers.stats()
    assert stats["aws-polly"]["requests"] == 1
    assert stats["storage"]["requests"] >= 2  # the upload (plus the bucket check) and the download
    assert ctx.usage == {"aws-polly": len("Hola, ¿qué tal?")}


def test_ssml_is_sent_as_ssml_and_a_named_voice_wins(providers, redis_url):
    ctx = job_context(
        redis_url, JobType.TTS, {"text": "<speak>Hello <break time='300ms'/> world</speak>", "voice": "Matthew"}
    )
    result = tts.synthesize(ctx)
    assert (
        result["text_type"] == "ssml" and result["voice"] == "Matthew" and result["characters"] == len("Hello  world")
    )


def test_malformed_ssml_and_unknown_languages_fail_before_polly(providers, redis_url):
    for params, code in (
        ({"text": "<speak>unclosed"}, "invalid_ssml"),
        ({"text": "hi", "language": "xx-YY"}, "unsupported_language"),
    ):
        with pytest.raises(PermanentError) as err:
            tts.synthesize(job_context(redis_url, JobType.TTS, params))
        assert err.value.code == code
    assert providers.requests("aws-polly") == 0


def test_polly_bad_request_fails_once(providers, redis_url):
    ctx = job_context(redis_url, JobType.TTS, {"text": "hello", "voice": "NoSuchVoice"})
    with pytest.raises(PermanentError) as err:
        tts.synthesize(ctx)
    assert err.value.code == "provider_bad_request"
    assert providers.requests("aws-polly") == 1  # botocore's own retries are off


@pytest.mark.parametrize(
    "provider, mode, expected",
    [
        ("aws-polly", "429", Throttled),
        ("aws-polly", "500", TransientError),
        ("aws-polly", "timeout", TransientError),
        ("storage", "429", Throttled),
        ("storage", "500", TransientError),
    ],
)
def test_aws_faults_map_to_our_errors(providers, redis_url, provider, mode, expected):
    providers.fault(provider, mode, **({"delay_s": 0.2} if mode == "timeout" else {}))
    ctx = job_context(redis_url, JobType.TTS, {"text": "hello world"})
    with pytest.raises(expected) as err:
        tts.synthesize(ctx)
    if expected is Throttled:
        assert err.value.provider == provider
    assert providers.requests(provider) == 1  # one attempt: retrying is the runner's business


# ----------------------------------------------------------------------------- a real worker


def test_the_three_job_types_through_a_real_worker(sandbox_reset, redis_url, start_worker):
    """Celery worker process, real runner, SDKs inside the worker: what production runs."""
    start_worker(
        sandbox_aws_port=sandbox_reset.env["SANDBOX_AWS_PORT"],
        azure_vision_poll_seconds="0.05",
        worker_queues="speech,ocr,tts",
    )
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    ids = {
        "speech": submit(
            store,
            JobType.PRONUNCIATION,
            {"reference_text": "my brother plays football", "language": "en-GB"},
            wav_bytes(spoken("my brother plays football")),
        ),
        "silent": submit(
            store,
            JobType.PRONUNCIATION,
            {"reference_text": "good morning", "language": "en-GB"},
            wav_bytes(silence(0.8)),
        ),
        "ocr": submit(store, JobType.OCR, {}, png_with_text(300, 100, "Buongiorno")),
        "tts": submit(store, JobType.TTS, {"text": "Buongiorno a tutti", "language": "it"}),
    }

    def done():
        jobs = {name: store.get(job_id) for name, job_id in ids.items()}
        return jobs if all(j.status.terminal for j in jobs.values()) else None

    jobs = wait_until(done, timeout=45)
    for name in ("speech", "ocr", "tts"):
        assert jobs[name].status is JobStatus.SUCCEEDED, (name, jobs[name].error)
    assert jobs["speech"].result["scores"]["completeness"] == 100
    assert jobs["ocr"].result["text"] == "Buongiorno"
    assert jobs["tts"].result["voice"] == "Bianca" and httpx.get(jobs["tts"].result["audio_url"]).status_code == 200
    assert jobs["silent"].status is JobStatus.FAILED and jobs["silent"].error.code == "silent_audio"
    assert jobs["silent"].attempts == 1
    client.close()
