"""What phones send, through the API and a real worker to the sandbox's Azure Speech and Vision.

One sentence spoken by espeak-ng, encoded in the test with PyAV the way iOS, Android and
browsers record it; each is submitted as a phone would and must be assessed.
"""

from __future__ import annotations

import redis

from devstack.processes import wait_until
from tests.samples import PHONE_AUDIO, encode_audio, spoken_wav, wav_bytes
from tests.support.api import auth
from unilingo.jobs import JobStore

SENTENCE = "Good morning, how are you today"
CODECS = {
    "m4a-aac": "aac",
    "3gp-amr": "amrnb",
    "webm-opus": "opus",
    "ogg-opus": "opus",
    "ogg-vorbis": "vorbis",
    "mp3": "mp3float",
    "flac": "flac",
    "wav-8k": "pcm_s16le",
    "wav-48k-stereo": "pcm_s16le",
}


def finished(store: JobStore, job_ids: dict[str, str]):
    jobs = {name: store.get(job_id) for name, job_id in job_ids.items()}
    return jobs if all(job is not None and job.status.terminal for job in jobs.values()) else None


async def test_a_pronunciation_job_succeeds_for_every_format_phones_record(
    api_factory,
    start_worker,
    sandbox_reset,
    redis_url,
):
    api = await api_factory(max_audio_bytes=2_000_000)
    start_worker(worker_queues="speech")
    spoken = spoken_wav(SENTENCE)
    uploads = {name: encode_audio(spoken, *spec) for name, spec in PHONE_AUDIO.items()}
    uploads["silent-m4a"] = encode_audio(wav_bytes([0] * 24_000), *PHONE_AUDIO["m4a-aac"])
    uploads["damaged-ogg"] = b"OggS" + b"\x00" * 400
    job_ids = {}
    for name, data in uploads.items():
        response = await api.post(
            "/api/pronunciation-assess",
            headers=auth("phone-user"),
            data={"reference_text": SENTENCE, "language": "en-US"},
            files={"audio": (f"recording.{name}", data)},
        )
        assert response.status_code == 202, (name, response.text)
        job_ids[name] = response.json()["job_id"]

    store = JobStore(redis.Redis.from_url(redis_url))
    jobs = wait_until(lambda: finished(store, job_ids), timeout=120)
    for name in PHONE_AUDIO:
        job = jobs[name]
        assert job.status.value == "succeeded", (name, job.error)
        assert job.result["audio_codec"] == CODECS[name]
        assert 1.5 < job.result["audio_seconds"] < 3.5, (name, job.result["audio_seconds"])
        assert job.result["words"] and job.result["recognized_text"], name
        assert set(job.result["scores"]) == {"accuracy", "fluency", "completeness", "pronunciation"}
    assert jobs["silent-m4a"].status.value == "failed" and jobs["silent-m4a"].error.code == "silent_audio"
    assert jobs["damaged-ogg"].status.value == "failed" and jobs["damaged-ogg"].error.code == "undecodable_audio"
    assert jobs["silent-m4a"].attempts == jobs["damaged-ogg"].attempts == 1
    stats = sandbox_reset_stats(sandbox_reset)
    assert stats["azure-speech"]["requests"] == len(PHONE_AUDIO)  # the two bad ones cost nothing


def sandbox_reset_stats(sandbox) -> dict:
    import httpx

    return httpx.get(f"{sandbox.url}/_sandbox/stats").json()


def photo_of_text(text: str, fmt: str, exif_orientation: int | None = None) -> bytes:
    """A printed line of text photographed as phones store it: HEIC, WEBP, or a sideways JPEG."""
    import io

    from PIL import Image

    from sandbox.images import png_with_text

    image = Image.open(io.BytesIO(png_with_text(640, 200, text))).convert("RGB")
    out = io.BytesIO()
    if fmt == "HEIC":
        from pillow_heif import from_pillow

        from_pillow(image).save(out, quality=90)
    elif exif_orientation:
        # The camera stored the picture turned; its EXIF says how to turn it back upright.
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", quality=92, exif=exif.tobytes())
    else:
        image.save(out, fmt, quality=90)
    return out.getvalue()


async def test_heic_webp_and_sideways_jpeg_photos_are_read(
    api_factory,
    start_worker,
    sandbox_reset,
    redis_url,
):
    api = await api_factory(max_image_bytes=2_000_000)
    start_worker(worker_queues="ocr", azure_vision_poll_seconds="0.05")
    photos = {
        "heic": photo_of_text("Guten Morgen", "HEIC"),
        "webp": photo_of_text("Buenos dias", "WEBP"),
        "jpeg": photo_of_text("Bonjour Paris", "JPEG", exif_orientation=6),
    }
    job_ids = {}
    for name, data in photos.items():
        response = await api.post(
            "/api/process-image",
            headers=auth("phone-user"),
            data={"language": "de"},
            files={"image": (f"IMG_0001.{name}", data)},
        )
        assert response.status_code == 202, (name, response.text)
        job_ids[name] = response.json()["job_id"]
    store = JobStore(redis.Redis.from_url(redis_url))
    jobs = wait_until(lambda: finished(store, job_ids), timeout=120)
    expected = {"heic": "Guten Morgen", "webp": "Buenos dias", "jpeg": "Bonjour Paris"}
    for name, job in jobs.items():
        assert job.status.value == "succeeded", (name, job.error)
        assert job.result["text"].strip() == expected[name], (name, job.result["text"])
        image = job.result["image"]
        assert image["converted"] is True and (image["width"], image["height"]) == (640, 200), (name, image)
    assert {job.result["image"]["source_format"] for job in jobs.values()} == {"heif", "webp", "jpeg"}
