# The Wangge service image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir uv
COPY pyproject.toml uv.lock README.md ./
COPY geo geo
COPY api api
COPY maps maps
COPY fixtures fixtures
COPY bench bench
COPY migrations migrations
RUN uv sync --frozen --no-dev && ln -s /app/.venv/bin/wangge /usr/local/bin/wangge
ENV PATH="/app/.venv/bin:$PATH"
EXPOSE 8000
CMD ["wangge", "serve"]
