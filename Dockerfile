# callpulse worker image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY callpulse ./callpulse
COPY schemas ./schemas
COPY streams ./streams
COPY sinks ./sinks
# the KPI engine compiled with Cython (streams/compiled.py); the compiler is removed afterwards
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir . \
    && callpulse compile \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
# the one folder a worker or sink writes: faust's per-app folders (CALLPULSE_DATA_DIR/faust; the
# tables themselves are in memory, recovered from their changelogs), writable by the image's user
RUN mkdir -p /var/lib/callpulse && chown nobody /var/lib/callpulse
ENV CALLPULSE_DATA_DIR=/var/lib/callpulse
USER nobody
ENTRYPOINT ["callpulse"]
CMD ["worker"]
