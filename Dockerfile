# syntax=docker/dockerfile:1.7
# Two images from one file:
#   docker build --target operator -t kubeinfer-operator .   kopf + kubernetes + pydantic, no torch
#   docker build --target runtime  -t kubeinfer-runtime  .   torch + diffusers + accelerate (CUDA) and the
#                                                            s3/gs/az stores, no kopf
# Each image is built in a throw-away stage into /opt/venv and only that venv is copied into a
# clean base, so no compiler, pip cache or source tree reaches the final images.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The CUDA "base" flavour carries the driver-facing env (NVIDIA_VISIBLE_DEVICES, ...) the NVIDIA
# container toolkit needs; the CUDA libraries themselves come with the torch wheels.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
# torch wheels built against the CUDA version of CUDA_IMAGE.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

# ---------------------------------------------------------------- operator
FROM ${PYTHON_IMAGE} AS operator-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY operator ./operator
COPY runtime ./runtime
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install ".[operator]" \
 && /opt/venv/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE} AS operator
COPY --from=operator-build /opt/venv /opt/venv
RUN useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin kubeinfer
ENV PATH=/opt/venv/bin:${PATH} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
ENTRYPOINT ["kubeinfer-operator"]

# ---------------------------------------------------------------- runtime
FROM ${CUDA_IMAGE} AS runtime-build
ARG TORCH_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install --yes --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY operator ./operator
COPY runtime ./runtime
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --extra-index-url "${TORCH_INDEX_URL}" ".[runtime,gcs,azure]" \
 && /opt/venv/bin/pip uninstall --yes pip setuptools

FROM ${CUDA_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
# Only the interpreter the venv links to; Ubuntu's image ships user "ubuntu" as uid 1000.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && (userdel --remove ubuntu 2>/dev/null || true) \
 && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin kubeinfer
COPY --from=runtime-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/kubeinfer HF_HOME=/home/kubeinfer/.cache/huggingface
WORKDIR /home/kubeinfer
USER 1000:1000
ENTRYPOINT ["kubeinfer-worker"]
