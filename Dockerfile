# One image, two entrypoints:
#   the sidecar (default):  python -m proxy run --config /app/policies.yaml
#   the inventory app:      python -m upstream_app --port 8081 --db /data/inventory.db ...
# The HEALTHCHECK probes /healthz on $HEALTH_PORT (8000, the sidecar; set 8081 for the app).
# /data (owned by the app user) is where the app keeps its SQLite file: mount a volume there.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HEALTH_PORT=8000

WORKDIR /src
COPY pyproject.toml ./
COPY policies/ policies/
COPY proxy/ proxy/
COPY upstream_app/ upstream_app/
RUN pip install --no-cache-dir /src \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data

WORKDIR /app
COPY policies.yaml ./
USER 10001:10001
EXPOSE 8000 8081

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['HEALTH_PORT'] + '/healthz', timeout=2)"]

CMD ["python", "-m", "proxy", "run", "--config", "/app/policies.yaml"]
