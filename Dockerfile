# One image, two entrypoints:
#   the sidecar (default):  python -m proxy run --config /app/policies.yaml
#   the inventory app:      python -m upstream_app --port 8081 --db /data/inventory.db ...
# The HEALTHCHECK probes /healthz on $HEALTH_PORT (9901, the admin listener of the shipped
# policy; 8081 for the app; 8000 for a policy without admin.listen).
# /data (owned by the app user) is where the app keeps its SQLite file: mount a volume there.
#
# Two stages: `build` has a C compiler and compiles the request path with mypyc
# (scripts/build_native.py, about half the CPU per request of the interpreted modules);
# the runtime stage takes the venv with the compiled modules and no compiler.

FROM python:3.11-slim AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml ./
COPY policies/ policies/
COPY proxy/ proxy/
COPY upstream_app/ upstream_app/
COPY scripts/build_native.py scripts/build_native.py
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir /src mypy==2.4.1
# Compile, refuse a stale or failed build, then put each extension next to its installed
# module (the shared mypyc runtime at the top of site-packages) and drop mypy.
RUN python scripts/build_native.py \
    && python scripts/build_native.py --check \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && cp ./*__mypyc.*.so "$site/" \
    && find proxy -name '*.so' -exec cp --parents {} "$site/" \; \
    && pip uninstall -y -q mypy \
    && python -I -c "import proxy.pipeline.chain as c; assert c.__file__.endswith('.so') and '/site-packages/' in c.__file__, c.__file__"

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HEALTH_PORT=9901

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
COPY policies.yaml ./
USER 10001:10001
EXPOSE 8000 8081 9901

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['HEALTH_PORT'] + '/healthz', timeout=2)"]

CMD ["python", "-m", "proxy", "run", "--config", "/app/policies.yaml"]
