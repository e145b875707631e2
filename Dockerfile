# syntax=docker/dockerfile:1
# syncd in a container: `docker build -t syncd .`, then run it with the config mounted at
# /etc/syncd/config.toml, the API keys in the environment and state under the /data volume.
# tests/test_container.py does what this file does (wheel → fresh venv → `syncd run`),
# since the test machines can't run Docker.

# -- builder: the wheel, installed with its runtime dependencies into a venv ------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY syncd ./syncd
COPY migrations ./migrations

# The wheel carries the Alembic migrations as syncd/_migrations (see pyproject.toml).
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/syncd \
 && /opt/syncd/bin/pip install "$(ls /dist/syncd-*.whl)[postgres,mysql]" \
 && /opt/syncd/bin/python -c "import syncd.state.migrate as m; assert m.migrations_dir().name == '_migrations'"

# -- runtime: the venv alone, a non-root user, state under /data --------------------------
FROM python:3.11-slim

LABEL org.opencontainers.image.title="syncd" \
      org.opencontainers.image.description="Catalog sync daemon: mirrors a product catalog into UserFlux and Vambe."

RUN groupadd --system --gid 10001 syncd \
 && useradd --system --uid 10001 --gid syncd --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin syncd \
 && mkdir -p /data /etc/syncd \
 && chown syncd:syncd /data

COPY --from=builder /opt/syncd /opt/syncd
COPY config.example.toml /etc/syncd/config.example.toml

ENV PATH="/opt/syncd/bin:${PATH}" \
    SYNCD_CONFIG=/etc/syncd/config.toml \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Put `state.url = "sqlite:////data/syncd-state.db"` in the config (or a PostgreSQL URL via
# state.url_env); migrations are applied when the daemon starts.
VOLUME ["/data"]
WORKDIR /data
USER syncd

# /healthz, /readyz and /metrics (health.port).
EXPOSE 9102

# SIGTERM lets in-flight requests finish within schedule.shutdown_grace_s (default 30 s):
# give `docker stop` more than that (`-t 45`, compose `stop_grace_period: 45s`).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["syncd", "healthcheck"]

ENTRYPOINT ["syncd"]
CMD ["run"]
