# syntax=docker/dockerfile:1.7
#
# One image for every Unilingo component; the command selects it:
#   python -m api                 the API tier (port 8080)
#   python -m workers             a Celery worker (WORKER_QUEUES=<queue>)
#   python -m unilingo_operator   the UnilingoProviderPolicy operator (kopf)
# The Helm chart (charts/unilingo) runs exactly these.
#
# Build: docker build -t unilingo:dev .      (scripts/kind-up.sh does this)
#
# - builder: installs the runtime dependencies, pinned by requirements.lock, into /opt/venv, with
#   BuildKit's cache mount as pip's wheel cache so rebuilds reuse downloaded wheels;
# - final: python:3.11-slim with that venv and the application packages only, byte-compiled
#   at build time, owned by root and run as the unprivileged uid/gid 10001: nothing in the
#   image is writable at run time, so it runs with readOnlyRootFilesystem (the chart mounts
#   an emptyDir at /tmp; HOME points there).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv "$VIRTUAL_ENV"
COPY requirements.lock pyproject.toml /tmp/build/
# The runtime dependencies declared in pyproject.toml, every version (transitive ones
# included) pinned by requirements.lock used as the constraints file; the pins of the
# lock for the tests (pytest, schemathesis, ...) and the sandbox (moto, pocketsphinx) stay out
# of the image (tests/unit/test_dependencies.py). Binary wheels only: no
# compiler is needed and no sdist build script runs (every pin has cp311 manylinux wheels
# for amd64 and arm64).
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/build/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/build/runtime.txt \
 && pip install --only-binary=:all: -r /tmp/build/runtime.txt -c /tmp/build/requirements.lock \
 && pip check

FROM ${PYTHON_IMAGE} AS final
ARG UID=10001
ARG GID=10001
LABEL org.opencontainers.image.title="unilingo" \
      org.opencontainers.image.description="Unilingo platform: api, workers and operator (selected by command)" \
      org.opencontainers.image.source="https://github.com/unilingo/unilingo" \
      org.opencontainers.image.licenses="Proprietary"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app:/app/operator \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    API_PORT=8080
RUN groupadd --system --gid "$GID" unilingo \
 && useradd --system --uid "$UID" --gid "$GID" --home-dir /tmp --no-create-home \
            --shell /usr/sbin/nologin unilingo
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Only the runtime packages (see .dockerignore); the repository's pyproject maps the
# `unilingo_operator` package from operator/, hence /app/operator on PYTHONPATH.
COPY unilingo/ /app/unilingo/
COPY api/ /app/api/
COPY workers/ /app/workers/
COPY operator/unilingo_operator/ /app/operator/unilingo_operator/
# Byte-compile now: the root filesystem is read-only at run time.
RUN python -m compileall -q /app /opt/venv/lib \
 && python -c "import unilingo, api, workers, unilingo_operator" \
 && chmod -R a+rX,go-w /app /opt/venv
USER ${UID}:${GID}
EXPOSE 8080
CMD ["python", "-m", "api"]
