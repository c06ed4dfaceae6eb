# syntax=docker/dockerfile:1
# hipgen/serving-base: the `.[serve]` virtual environment (ONNX Runtime, grpcio, no torch) at /opt/venv,
# user and group 10001, the serving environment, no models and no entrypoint.
#
# One base so that the four service images (services/{angle,generate,score,gateway}/Dockerfile) do not
# repeat the install: each of them adds only its models, its port, a HEALTHCHECK and its entrypoint.
# Built from the repository root (the .dockerignore there keeps the context small):
#
#   docker buildx bake serving-base        # docker-bake.hcl: tags hipgen/serving-base:0.1.0
#   docker build -f docker/serving-base.Dockerfile -t hipgen/serving-base:0.1.0 .
#
# PYTHON_IMAGE is a pinned tag; for byte-for-byte reproducible builds pin its digest as well:
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest of `docker buildx imagetools inspect`>
# Both stages must use the same image: the venv's python links to that image's /usr/local/bin/python3.11.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# checkov:skip=CKV_DOCKER_7: the ARG above pins a tag; checkov does not expand ARGs in FROM

# --- build: generate the gRPC stubs, install hipgen[serve] (non-editable) into /opt/venv -----------------
FROM ${PYTHON_IMAGE} AS build
# the stub generator, pinned to what the stubs' protobuf runtime check expects (pyproject's dev extra)
ARG GRPCIO_TOOLS_VERSION=1.85.1
ARG GOOGLEAPIS_COMMON_PROTOS_VERSION=1.76.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# grpcio-tools lives in a venv of its own that the runtime stage never copies
RUN python -m venv /opt/protoc \
 && /opt/protoc/bin/pip install --no-cache-dir \
      "grpcio-tools==${GRPCIO_TOOLS_VERSION}" \
      "googleapis-common-protos==${GOOGLEAPIS_COMMON_PROTOS_VERSION}"

WORKDIR /src
# only what the package needs: pyproject's package find takes hipgen* and services* (training/ is not
# copied, so the serving image carries no training code); the stubs in hipgen/api/v1 are generated here
# (.dockerignore keeps a developer's generated copy out of the context)
COPY pyproject.toml README.md ./
COPY protos/ protos/
COPY scripts/gen_protos.py scripts/gen_protos.py
COPY hipgen/ hipgen/
COPY services/ services/
RUN /opt/protoc/bin/python scripts/gen_protos.py

# python -I: the import check reads the installed venv, not the source tree in the working directory
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir ".[serve]" \
 && /opt/venv/bin/python -I -c "import hipgen.api.v1.angle_pb2, services.server, onnxruntime" \
 && if /opt/venv/bin/python -c "import torch" 2>/dev/null; then \
      echo "torch reached the serving venv" >&2; exit 1; \
    fi

# --- runtime: the venv, a non-root user, nothing else ------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG HIPGEN_VERSION=0.1.0
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="hipgen serving base" \
      org.opencontainers.image.description="hipgen[serve]: ONNX Runtime and gRPC, no torch" \
      org.opencontainers.image.version="${HIPGEN_VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="hipgen"

RUN groupadd --gid 10001 hipgen \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin hipgen

# root-owned: user 10001 can run the code but not change it
COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HIPGEN_HOST=0.0.0.0 \
    HIPGEN_LOG_FORMAT=json \
    HIPGEN_MODEL_REPOSITORY=/opt/hipgen/model_repository \
    HIPGEN_OUT_DIR=/tmp/hipgen

# the service images copy their models to /opt/hipgen/model_repository; writes go to /tmp (an emptyDir in
# Kubernetes, where the root filesystem can be read-only)
WORKDIR /opt/hipgen

# no server runs in the base itself; each service image declares its own gRPC HEALTHCHECK (services.probe)
HEALTHCHECK NONE
USER 10001
