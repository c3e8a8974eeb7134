# pls-sync as a cron container: `pls-sync schedule` by default, `pls-sync run` as a one-shot job.
FROM python:3.11-slim

# Warehouse drivers to install: postgres, snowflake, bigquery (comma-separated extras).
ARG EXTRAS=postgres

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PLS_SYNC_LOG_STREAM=stdout

WORKDIR /app

# Dependencies first, in their own cached layer: only pyproject.toml decides them.
COPY pyproject.toml README.md ./
RUN mkdir -p pls_sync connectors \
    && touch pls_sync/__init__.py connectors/__init__.py \
    && python -m pip install ".[${EXTRAS}]" \
    && python -m pip uninstall -y pls-sync

# The project itself, installed the same way as the README's first command.
COPY pls_sync ./pls_sync
COPY connectors ./connectors
RUN python -m pip install --no-deps ".[${EXTRAS}]"

# Config and mappings: mount your own over /app/config and /app/mappings.
COPY config ./config
COPY mappings ./mappings

RUN useradd --create-home --uid 10001 pls \
    && mkdir -p /app/.pls-sync \
    && chown -R pls /app/.pls-sync
USER pls

# Secrets come only from the environment or /run/secrets (Docker/Kubernetes secrets).
VOLUME ["/app/.pls-sync"]

HEALTHCHECK --interval=5m --timeout=30s --start-period=2m \
    CMD ["pls-sync", "status"]

ENTRYPOINT ["pls-sync"]
CMD ["schedule"]
