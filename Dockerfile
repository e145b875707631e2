# syntax=docker/dockerfile:1
# syncd in a container: `docker build --build-arg SYNCD_VERSION=$(git describe --tags) -t syncd .`,
# then run it with the config mounted at /etc/syncd/config.toml, the API keys in the
# environment and state under the /data volume (README: "Running it in a container").
# tests/test_container.py does what this file does (wheel → fresh venv → `syncd run`),
# and tests/test_deployment.py checks this file's pins, since the test machines can't run
# Docker.
#
# Reproducible: the base image is pinned by digest, the dependencies by hash
# (examples/deployment/requirements.lock) and so are the build backend and its plugins
# (examples/deployment/build-requirements.lock: hatchling, hatch-vcs and what they need),
# all installed with --require-hashes; the wheel is built with --no-build-isolation, so pip
# downloads nothing unpinned to build it.
# To move to a newer base image: `docker buildx imagetools inspect python:3.11-slim-bookworm`
# (or `docker pull python:3.11-slim-bookworm && docker inspect --format
# '{{index .RepoDigests 0}}' python:3.11-slim-bookworm`) prints the current multi-arch
# digest; put it in BASE below with the exact tag it belongs to, rebuild, run the tests.
# The locks: scripts/lock-requirements.sh.
ARG BASE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

# -- builder: the wheel, installed with its locked dependencies into a venv -------------
FROM ${BASE} AS builder

# The version comes from git tags (hatch-vcs); .git is not sent to the build, so say it.
ARG SYNCD_VERSION=0.0.0+unknown
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SETUPTOOLS_SCM_PRETEND_VERSION_FOR_SYNCD=${SYNCD_VERSION}

WORKDIR /src
COPY examples/deployment/requirements.lock ./requirements.lock
COPY examples/deployment/build-requirements.lock ./build-requirements.lock
RUN python -m venv /opt/syncd \
 && /opt/syncd/bin/pip install --require-hashes --no-deps -r requirements.lock \
 && python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps -r build-requirements.lock

COPY pyproject.toml README.md ./
COPY syncd ./syncd
COPY migrations ./migrations

# The wheel carries the Alembic migrations as syncd/_migrations (see pyproject.toml); it is
# built by the locked backend in /opt/build (no isolation: nothing fetched), and syncd goes
# in without dependencies: every one is already there from the lock. pip compiles what it
# installs to bytecode (PYTHONDONTWRITEBYTECODE only stops the interpreter writing it), so
# no process compiles syncd from source at run time (~0.15 s of every command's start):
# the last line checks it.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
 && /opt/syncd/bin/pip install --no-deps "$(ls /dist/syncd-*.whl)" \
 && /opt/syncd/bin/pip check \
 && /opt/syncd/bin/python -c "import syncd.state.migrate as m; assert m.migrations_dir().name == '_migrations'" \
 && /opt/syncd/bin/python -c "import pathlib, importlib.util as u, syncd; assert all(pathlib.Path(u.cache_from_source(str(f))).is_file() for f in pathlib.Path(syncd.__file__).parent.rglob('*.py'))"

# -- runtime: the venv alone, a non-root user, state and TMPDIR on volumes ----------------
FROM ${BASE}

LABEL org.opencontainers.image.title="syncd" \
      org.opencontainers.image.description="Catalog sync daemon: mirrors a product catalog into UserFlux and Vambe."

RUN groupadd --system --gid 10001 syncd \
 && useradd --system --uid 10001 --gid syncd --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin syncd \
 && mkdir -p /data /tmp/syncd /etc/syncd \
 && chown syncd:syncd /data /tmp/syncd

COPY --from=builder /opt/syncd /opt/syncd
COPY config.example.toml /etc/syncd/config.example.toml

# Read-only root filesystem friendly (`docker run --read-only`, Kubernetes
# readOnlyRootFilesystem): nothing is written outside /data and TMPDIR (mount a tmpfs
# there), no .pyc files are written at run time.
ENV PATH="/opt/syncd/bin:${PATH}" \
    SYNCD_CONFIG=/etc/syncd/config.toml \
    TMPDIR=/tmp/syncd \
    HOME=/data \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Put `state.url = "sqlite:////data/syncd-state.db"` in the config (or a PostgreSQL URL via
# state.url_env); migrations are applied when the daemon starts.
VOLUME ["/data", "/tmp/syncd"]
WORKDIR /data
USER 10001:10001

# /healthz, /readyz, /metrics and the status page (health.port). Publish it on
# 127.0.0.1 only (`-p 127.0.0.1:9102:9102`) or keep it inside a private network.
EXPOSE 9102

# SIGTERM lets in-flight requests finish within schedule.shutdown_grace_s (default 30 s):
# give `docker stop` more than that (`-t 45`, compose `stop_grace_period: 45s`).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["syncd", "healthcheck"]

ENTRYPOINT ["syncd"]
CMD ["run"]
