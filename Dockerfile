# Patron's one image: the same code runs as web (ASGI), worker and beat.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml ./
COPY config ./config
COPY core ./core
COPY commerce ./commerce
COPY engagement ./engagement
COPY loyalty ./loyalty
COPY chat ./chat
COPY recommendations ./recommendations
COPY carts ./carts
COPY storefront ./storefront
COPY templates ./templates
# Translations (LOCALE_PATHS): the compiled .mo files are committed, so no gettext is needed.
COPY locale ./locale
COPY manage.py ./
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app patron \
    && mkdir -p /app/staticfiles && chown -R patron /app

USER patron
# collectstatic needs settings but no database: run it with throwaway values.
RUN DEBUG=0 SECRET_KEY=collectstatic-only DATABASE_URL=postgresql://x@localhost/x \
    REDIS_URL=redis://localhost:6379/0 python manage.py collectstatic --noinput

EXPOSE 8000
# Server flags measured by bench/chat.py (uvloop, httptools, sans-I/O websockets, no deflate).
CMD ["uvicorn", "config.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--proxy-headers", \
     "--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio", "--ws-per-message-deflate", "false"]
