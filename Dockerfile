# syntax=docker/dockerfile:1.7
# Two images from one file:
#   docker build --target operator -t kubeinfer-operator .   kopf + kubernetes + pydantic, no torch
#   docker build --target runtime  -t kubeinfer-runtime  .   torch + diffusers + accelerate (CUDA) and the
#                                                            s3/gs/az stores, no kopf
# Each image is its dependencies (a layer that changes only with pyproject.toml) and then the project's
# wheel, built in a throw-away stage: no compiler, pip, pip cache or source tree reaches the images.
# hack/build-images.sh builds both without a Docker engine (buildah) from Debian bases and a local
# wheel folder; the defaults below are the public bases and indexes.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The CUDA "base" flavour carries the driver-facing env (NVIDIA_VISIBLE_DEVICES, ...) the NVIDIA
# container toolkit needs; the CUDA libraries themselves come with the torch wheels.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
# torch wheels built against the CUDA version of CUDA_IMAGE.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# Extra pip options for every install, e.g. "--no-index --find-links /wheels" for a mounted wheel folder.
ARG PIP_OPTIONS=""
# The dependency stages the images start from; a builder may name an image it already built instead.
ARG OPERATOR_DEPS=operator-deps
ARG RUNTIME_DEPS=runtime-deps

# ---------------------------------------------------------------- the project as a wheel
FROM ${PYTHON_IMAGE} AS wheel
ARG PIP_OPTIONS
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY operator ./operator
COPY runtime ./runtime
RUN python3 -m venv /tmp/build \
 && /tmp/build/bin/pip wheel --no-cache-dir --disable-pip-version-check ${PIP_OPTIONS} --no-deps --wheel-dir /dist .

# ---------------------------------------------------------------- operator
FROM ${PYTHON_IMAGE} AS operator-deps
ARG PIP_OPTIONS
COPY pyproject.toml hack/image-requirements.py /tmp/deps/
RUN python3 /tmp/deps/image-requirements.py /tmp/deps/pyproject.toml operator >/tmp/deps/requirements.txt \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_OPTIONS} -r /tmp/deps/requirements.txt \
 && rm -rf /tmp/deps \
 && useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin kubeinfer

FROM ${OPERATOR_DEPS} AS operator
ARG PIP_OPTIONS
COPY --from=wheel /dist /tmp/dist
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_OPTIONS} --no-deps /tmp/dist/*.whl \
 && rm -rf /tmp/dist \
 && /opt/venv/bin/pip uninstall --yes --disable-pip-version-check pip \
 && if python3 -m pip --version >/dev/null 2>&1; then python3 -m pip uninstall --yes pip setuptools wheel; fi
ENV PATH=/opt/venv/bin:${PATH} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
ENTRYPOINT ["kubeinfer-operator"]

# ---------------------------------------------------------------- runtime
FROM ${CUDA_IMAGE} AS runtime-deps
ARG TORCH_INDEX_URL
ARG PIP_OPTIONS
ENV DEBIAN_FRONTEND=noninteractive
# Only the interpreter the venv links to; Ubuntu's image ships user "ubuntu" as uid 1000.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && (userdel --remove ubuntu 2>/dev/null || true) \
 && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin kubeinfer
COPY pyproject.toml hack/image-requirements.py /tmp/deps/
RUN python3 /tmp/deps/image-requirements.py /tmp/deps/pyproject.toml runtime gcs azure >/tmp/deps/requirements.txt \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_OPTIONS} \
      --extra-index-url "${TORCH_INDEX_URL}" -r /tmp/deps/requirements.txt \
 && rm -rf /tmp/deps

FROM ${RUNTIME_DEPS} AS runtime
ARG PIP_OPTIONS
COPY --from=wheel /dist /tmp/dist
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_OPTIONS} --no-deps /tmp/dist/*.whl \
 && rm -rf /tmp/dist \
 && /opt/venv/bin/pip uninstall --yes --disable-pip-version-check pip
ENV PATH=/opt/venv/bin:${PATH} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/kubeinfer HF_HOME=/home/kubeinfer/.cache/huggingface
WORKDIR /home/kubeinfer
USER 1000:1000
ENTRYPOINT ["kubeinfer-worker"]
