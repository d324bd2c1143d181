# syntax=docker/dockerfile:1
# The Hugging Face Docker Space image: the same app as `make serve`, on 0.0.0.0:8000, as uid 1000.
# `python -m tools.check` keeps this file and README.md's front matter in step.
#
# Build locally:  docker build -t diffusion-serve .
#                 docker build --build-arg MODEL=<hub id> --secret id=HF_TOKEN,env=HF_TOKEN .
# Run locally:    docker run --gpus all -p 8000:8000 -e MODEL=<hub id> diffusion-serve

FROM ghcr.io/astral-sh/uv:0.8.14 AS uv

# CUDA 12 base: it sets the NVIDIA container hooks and holds cudart; the torch wheel below
# carries its own cuBLAS/cuDNN, so the larger `runtime` variant would only duplicate them.
# Its CUDA (12.6) matches the cu126 wheel's, so it asks the host driver for no more than torch
# does (a cu130 wheel brings its own CUDA 13 runtime and asks for driver 580 itself).
FROM nvidia/cuda:12.6.3-base-ubuntu22.04

# torch's CUDA build (TORCH_CUDA): torch 2.12-2.14 publish cu126 and cu130 (cu128 ended with
# 2.11). cu126 runs on every Space GPU before Blackwell (T4, L4, L40S, A10G, A100) on any recent
# driver; it has no Blackwell kernels, so rtx-pro-6000 hardware needs cu130 (Turing to
# Blackwell; it needs a host driver >= 580): set a Space variable TORCH_CUDA=cu130.
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu126
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_CUDA}
# Hugging Face passes Space variables as build args: with MODEL set to a hub id, its weights
# are downloaded into the image, so a restart does not download them again.
ARG MODEL=mock
ARG MODEL_REVISION=

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

COPY --from=uv /uv /usr/local/bin/uv

# Python 3.11 and the venv live outside any home directory, readable by every user.
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN uv venv --python 3.11 /opt/venv \
    && uv pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# Dependencies from the project's own list (pyproject.toml) at the versions requirements.lock
# pins (`make lock`), before the code, so a code change does not reinstall them. torch is
# already satisfied by the CUDA build above; the lock leaves torch out.
COPY pyproject.toml requirements.lock /opt/project/
RUN uv pip install -r /opt/project/pyproject.toml --extra diffusers --extra ui \
        -c /opt/project/requirements.lock \
    && useradd --create-home --uid 1000 user \
    && install -d -o user -g user /home/user/app /home/user/.cache

# The Space runs the container as uid 1000 (user `user`, created above), so caches must be
# under its own HOME.
USER 1000
ENV HOME=/home/user \
    HF_HOME=/home/user/.cache/huggingface \
    GRADIO_TEMP_DIR=/home/user/.cache/gradio \
    GRADIO_ANALYTICS_ENABLED=False \
    PYTHONUNBUFFERED=1
WORKDIR /home/user/app

# Weights: only the download code comes first, so a code change does not download them again.
# The token is a build secret (never ARG/ENV, which would store it in the image).
COPY --chown=user:user inference/__init__.py inference/errors.py inference/weights.py ./inference/
# A MODEL with a colon is a class of your own (package.module:Class): nothing to download here.
RUN --mount=type=secret,id=HF_TOKEN,mode=0444,required=false \
    if [ "$MODEL" != "mock" ] && [ ! -d "$MODEL" ] && [ "${MODEL#*:}" = "$MODEL" ]; then \
        HF_TOKEN="$(cat /run/secrets/HF_TOKEN 2>/dev/null || true)" python -c \
        "import sys; from inference.weights import download_weights as d; d(sys.argv[1], sys.argv[2] or None)" \
        "$MODEL" "$MODEL_REVISION"; \
    fi

COPY --chown=user:user pyproject.toml README.md ./
COPY --chown=user:user inference ./inference
# Model classes of your own (MODEL=package.module:Class) are imported from the app folder:
# copy your package here like the examples.
COPY --chown=user:user examples ./examples
# Installed as root (from a copy, so no build files land in the app folder) for its version metadata;
# the CMD runs the same code from the app folder.
USER 0
RUN cp -r /home/user/app /tmp/src && uv pip install --no-deps /tmp/src && rm -rf /tmp/src
USER 1000

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["python", "-m", "inference", "serve", "--host", "0.0.0.0", "--port", "8000"]
