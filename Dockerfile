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
USER nobody
ENTRYPOINT ["callpulse"]
CMD ["worker"]
