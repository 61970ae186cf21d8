"""Unilingo's FastAPI tier: auth, quotas, validation, job submission, status, SSE, metrics.

``api.main:app`` is the ASGI app; ``python -m api`` serves it with uvicorn on ``API_PORT``.
"""
