"""Speech recognition for the Azure Speech emulation: PocketSphinx and the English model its wheel ships.

``recognise`` decodes a recording with PocketSphinx's US English acoustic model, its general
language model and the CMU pronouncing dictionary: what it returns is what the engine heard,
whatever the reference text says. ``align`` then lines the heard words up with the
reference (a minimum-cost alignment in which a substitution costs how unlike the two
words' phones are), giving per-word accuracy, omissions and insertions.

PocketSphinx is a small, old engine: on clear speech it gets most words, on espeak-ng's
robotic voice perhaps half (see ``sandbox/README.md``). There is no model for any other
language in a package, so ``has_model`` is false for them and the caller falls back.

Decoding takes 0.5-1.3 s a second of audio on one core of a busy 2-core machine. ``MAX_PARALLEL`` decodes
run at once, each thread with a decoder of its own (a decoder is not thread-safe, and
loading one takes about a second), and a recording already decoded is answered from a
small cache: load tests send the same file again and again.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache

from sandbox.audio import Pcm

ENGINE = "pocketsphinx-en-us"
MODEL_RATE = 16_000
FRAMES_PER_S = 100
MAX_PARALLEL = 2
CACHE_SIZE = 256
NON_WORDS = ("<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]", "[BREATH]")

_pool = ThreadPoolExecutor(max_workers=MAX_PARALLEL, thread_name_prefix="sandbox-asr")
_local = threading.local()
_cache: OrderedDict[str, list[HeardWord]] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class HeardWord:
    word: str
    start_s: float
    end_s: float


def has_model(language: str | None) -> bool:
    """Whether recognition is real for this language (``en-US``, ``en-GB``, ``en``...)."""
    return (language or "").lower().split("-")[0] == "en"


def _decoder():
    decoder = getattr(_local, "decoder", None)
    if decoder is None:
        from pocketsphinx import Decoder  # loads the model: about a second, once per thread

        # The forward flat pass doubles the time for little gain on short utterances.
        decoder = _local.decoder = Decoder(
            samprate=MODEL_RATE, fwdflat=False, bestpath=True, cmn="batch", dither=True, seed=1, loglevel="FATAL"
        )
    return decoder


def warm_up() -> None:
    """Load every pool thread's decoder in the background, so the first recording waits less."""
    barrier = threading.Barrier(MAX_PARALLEL)

    def load() -> None:
        _decoder()
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=60)  # keeps this thread busy until the other has taken its task

    for _ in range(MAX_PARALLEL):
        _pool.submit(load)


def _at_model_rate(pcm: Pcm) -> bytes:
    """16 kHz samples: Azure takes 8 kHz telephone audio too, the model wants 16."""
    if pcm.sample_rate == MODEL_RATE:
        return pcm.samples.tobytes()
    import numpy

    samples = numpy.frombuffer(pcm.samples.tobytes(), dtype=numpy.int16).astype(numpy.float64)
    count = int(len(samples) * MODEL_RATE / pcm.sample_rate)
    resampled = numpy.interp(numpy.linspace(0, len(samples) - 1, count), numpy.arange(len(samples)), samples)
    return resampled.astype(numpy.int16).tobytes()


def _decode(pcm: Pcm) -> list[HeardWord]:
    with _cache_lock:
        if pcm.digest in _cache:
            _cache.move_to_end(pcm.digest)
            return _cache[pcm.digest]
    decoder = _decoder()
    # Even batch normalisation starts from the last utterance's figures: start afresh, so a
    # recording decodes the same whichever decoder takes it and whatever it heard before.
    decoder.reinit_feat()
    decoder.start_utt()
    decoder.process_raw(_at_model_rate(pcm), full_utt=True)
    decoder.end_utt()
    words = [
        HeardWord(
            segment.word.split("(")[0].lower(),
            segment.start_frame / FRAMES_PER_S,
            (segment.end_frame + 1) / FRAMES_PER_S,
        )
        for segment in decoder.seg()
        if segment.word not in NON_WORDS and not segment.word.startswith("[")
    ]
    with _cache_lock:
        _cache[pcm.digest] = words
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return words


def recognise(pcm: Pcm) -> list[HeardWord]:
    """The words PocketSphinx hears in the recording, with their times (blocking)."""
    return _pool.submit(_decode, pcm).result()


@lru_cache(maxsize=4096)
def phones(word: str) -> tuple[str, ...]:
    """The word's phones from the CMU dictionary, or its letters when the dictionary lacks it."""
    try:
        found = _decoder().lookup_word(word.lower())
    except (RuntimeError, KeyError):
        found = None
    return tuple(found.split()) if found else tuple(word.lower())


def similarity(reference: str, heard: str) -> float:
    """0..1: how much of the two words' phones agree."""
    if reference == heard:
        return 1.0
    return SequenceMatcher(None, phones(reference), phones(heard), autojunk=False).ratio()


@dataclass(frozen=True)
class Aligned:
    reference: str | None  # None: an insertion
    heard: HeardWord | None  # None: an omission
    similarity: float


def align(reference: list[str], heard: list[HeardWord]) -> list[Aligned]:
    """The cheapest alignment: omitting or inserting a word costs 1, substituting 1 - similarity."""
    n, m = len(reference), len(heard)
    cost = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        cost[i][0] = float(i)
    for j in range(1, m + 1):
        cost[0][j] = float(j)
    sims = [[similarity(reference[i], heard[j].word) for j in range(m)] for i in range(n)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(
                cost[i - 1][j] + 1.0,
                cost[i][j - 1] + 1.0,
                cost[i - 1][j - 1] + 1.0 - sims[i - 1][j - 1],
            )
    pairs: list[Aligned] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and abs(cost[i][j] - (cost[i - 1][j - 1] + 1.0 - sims[i - 1][j - 1])) < 1e-9:
            # A substitution this unlike the word is better told as an omission plus an insertion.
            if sims[i - 1][j - 1] >= 0.34:
                pairs.append(Aligned(reference[i - 1], heard[j - 1], sims[i - 1][j - 1]))
            else:
                pairs.append(Aligned(None, heard[j - 1], 0.0))
                pairs.append(Aligned(reference[i - 1], None, 0.0))
            i, j = i - 1, j - 1
        elif i > 0 and abs(cost[i][j] - (cost[i - 1][j] + 1.0)) < 1e-9:
            pairs.append(Aligned(reference[i - 1], None, 0.0))
            i -= 1
        else:
            pairs.append(Aligned(None, heard[j - 1], 0.0))
            j -= 1
    pairs.reverse()
    return pairs
