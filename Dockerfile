# callpulse worker image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY callpulse ./callpulse
COPY schemas ./schemas
COPY streams ./streams
COPY sinks ./sinks
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["callpulse"]
CMD ["worker"]
