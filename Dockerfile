# syntax=docker/dockerfile:1.7
# Darkroom images. Build from the repository root:
#   docker build -t REGISTRY/darkroom:TAG .                                   # the worker (default target)
# Base images are pinned by tag; pin them by digest too (`@sha256:...`) once your registry mirror has them.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

# --- build: install the project and its runtime dependencies into a self-contained venv -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/darkroom \
 && /opt/darkroom/bin/pip install pip==24.2 setuptools==75.1.0 wheel==0.44.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY stream ./stream
COPY search ./search
COPY trainer ./trainer
COPY tools ./tools
# The core dependencies and the `s3` extra (botocore, for s3:// photos) only: no Triton server, broker or
# torch (the `embedded` and `train` extras).
RUN /opt/darkroom/bin/pip install ".[s3]" \
 && /opt/darkroom/bin/darkroom --help > /dev/null

# --- worker: slim runtime, non-root, read-only-root friendly ----------------------------------------
FROM ${PYTHON_IMAGE} AS worker
RUN groupadd --system --gid 10001 darkroom \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin darkroom
COPY --from=build /opt/darkroom /opt/darkroom
ENV PATH=/opt/darkroom/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DARKROOM_WEB_BIND=0.0.0.0 \
    DARKROOM_DATA_DIR=/tmp/darkroom-worker
USER 10001:10001
WORKDIR /tmp
EXPOSE 6066
ENTRYPOINT ["darkroom"]
CMD ["worker"]
