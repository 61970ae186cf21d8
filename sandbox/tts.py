"""Speech synthesis for the Polly emulation: Debian's ``espeak-ng`` speaks, ``sox`` encodes.

Polly's voice names a language (Vicki is ``de-DE``, Lucia ``es-ES``); espeak-ng speaks that
language with its own voice for it, and a female variant for Polly's female voices.
espeak-ng reads SSML (``-m``), so ``TextType: ssml`` keeps its breaks and prosody. The
audio is then encoded as Polly encodes it: ``mp3`` and ``ogg_vorbis`` at 22.05 kHz unless
``SampleRate`` says otherwise (24 kHz for the neural engine), ``pcm`` as raw signed 16-bit
little-endian mono at 16 kHz (or 8 kHz). What comes back plays, lasts as long as the text
takes to say, and says it, in espeak-ng's robotic voice rather than Polly's.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile

TIMEOUT_S = 60.0
# Polly's voices speak about 150 words a minute; espeak-ng's default 175 is hurried.
WORDS_PER_MINUTE = 150
DEFAULT_RATES = {"mp3": 22_050, "ogg_vorbis": 22_050, "pcm": 16_000}
NEURAL_RATES = {"mp3": 24_000, "ogg_vorbis": 24_000, "pcm": 16_000}
# sox's output options per Polly format.
ENCODINGS = {
    "mp3": ["-t", "mp3", "-C", "64"],
    "ogg_vorbis": ["-t", "ogg", "-C", "3"],
    "pcm": ["-t", "raw", "-e", "signed-integer", "-b", "16", "-L"],
}
# Polly's language codes whose espeak-ng voice is not the code itself, lower-cased.
ESPEAK_VOICES = {
    "en-au": "en-gb", "en-in": "en-gb", "en-nz": "en-gb", "en-za": "en-gb", "en-ie": "en-gb",
    "en-gb-wls": "en-gb", "es-mx": "es-419", "es-us": "es-419", "pt-pt": "pt", "fr-fr": "fr-fr",
    "fr-ca": "fr-fr", "cmn-cn": "cmn", "yue-cn": "yue", "arb": "ar", "ar-ae": "ar", "nb-no": "nb",
    "de-at": "de", "de-ch": "de", "nl-be": "nl", "hi-in": "hi", "ca-es": "ca", "fi-fi": "fi",
}  # fmt: skip


class SynthesisUnavailable(RuntimeError):
    """espeak-ng or sox is not installed (``scripts/bootstrap.sh`` installs them)."""


@functools.cache
def _espeak_languages() -> frozenset[str]:
    listing = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, timeout=TIMEOUT_S).stdout
    return frozenset(line.split()[1].lower() for line in listing.splitlines()[1:] if len(line.split()) > 1)


def espeak_voice(language_code: str, gender: str = "") -> str:
    """espeak-ng's ``-v`` for a Polly language code (``de-DE``) and voice gender."""
    code = language_code.lower()
    known = _espeak_languages()
    voice = next(
        (candidate for candidate in (ESPEAK_VOICES.get(code), code, code.split("-")[0]) if candidate in known),
        "en-us",
    )
    return f"{voice}+f3" if gender.lower() == "female" else voice


def sample_rate(output_format: str, requested: str | int | None, engine: str | None) -> int:
    if requested:
        return int(requested)
    return (NEURAL_RATES if engine in ("neural", "generative", "long-form") else DEFAULT_RATES)[output_format]


def synthesize(text: str, ssml: bool, language_code: str, gender: str, output_format: str, rate: int) -> bytes:
    """The audio of ``text`` spoken in ``language_code``, encoded as Polly's ``output_format``."""
    if output_format not in ENCODINGS:
        raise ValueError(f"no audio encoding for {output_format!r}")
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        raise SynthesisUnavailable("espeak-ng and sox are needed: run scripts/bootstrap.sh")
    with tempfile.TemporaryDirectory(prefix="sandbox-tts-") as folder:
        spoken = os.path.join(folder, "spoken.wav")
        command = ["espeak-ng", "-v", espeak_voice(language_code, gender), "-s", str(WORDS_PER_MINUTE), "-w", spoken]
        if ssml:
            command.append("-m")
        # The text on stdin: never mistaken for an option, any length.
        subprocess.run(command, input=text.encode("utf-8"), check=True, capture_output=True, timeout=TIMEOUT_S)
        encoded = subprocess.run(
            ["sox", "-q", "-D", spoken, "-r", str(rate), "-c", "1", *ENCODINGS[output_format], "-"],
            check=True,
            capture_output=True,
            timeout=TIMEOUT_S,
        )
    return encoded.stdout
