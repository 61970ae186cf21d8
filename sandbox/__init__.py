"""Provider sandbox: OpenAI, Azure Speech, Azure Vision, AWS Polly and S3 on localhost.

Emulated at Unilingo v1's real quotas and latencies (scaled), reachable by the real SDKs, and
observable (``/_sandbox/stats``) and breakable (``/_sandbox/faults``) by tests. Run it with
``python -m sandbox``; see ``sandbox.__main__`` for its environment variables.

Modules:
  app              the ASGI app factory, ``create_app``
  profiles         Unilingo v1's quotas and latencies per provider
  quotas           rolling request/token windows and concurrency caps
  stats            per-provider counters and per-second timeline
  faults           injected 429 / 500 / timeout / slow faults
  gate             the path every call takes: count, faults, quota, then work
  hangup           closing a connection without an answer (the timeout fault)
  content          plausible model answers from the prompt and a JSON schema
  openai_requests  OpenAI request validation, with OpenAI's own errors
  openai_api       OpenAI chat completions and models
  audio            WAV decoding and voice activity
  azure_speech     Azure Speech short-audio recognition with pronunciation assessment
  speech_ws        the same assessment over the Speech SDK's websocket protocol
  images           image formats by magic bytes; drawing text into a PNG for tests
  ocr              Tesseract's reading of an image, in Read 3.2's shape
  recognition      PocketSphinx's recognition of English, lined up with a reference
  tts              espeak-ng's speech, encoded by sox as Polly's formats
  azure_vision     Azure Vision Read API v3.2
  azure_common     Azure's key header and error shape
  aws              moto's Polly and S3 behind the same gate, on their own port
  control          /_sandbox health, stats, faults and reset
  runtime          the state shared by all of the above
"""
