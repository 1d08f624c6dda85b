# One gateway replica. The same image runs the simulator: `docker run IMAGE gateway simulate --host 0.0.0.0`.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PATH="/app/.venv/bin:$PATH"

RUN pip install --no-cache-dir uv==0.13.9 && useradd --create-home --uid 10001 gateway
WORKDIR /app

# Dependencies first: this layer is reused until pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project

COPY gateway ./gateway
COPY schema ./schema
RUN uv sync --locked --no-dev

USER 10001
ENV GATEWAY_HOST=0.0.0.0
EXPOSE 8000 50051
# Exec form: no shell in between; urlopen raises (exit 1) on a refused or non-2xx answer.
HEALTHCHECK CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["gateway", "serve"]
