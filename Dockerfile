# storm-notifier: `docker build -t storm-notifier .`, then `docker run storm-notifier run` with a
# config mounted at /app/config/notifier.yaml (or NOTIFIER_CONFIG pointing at one).
# docker-compose.yml runs it with Redis and a simulated Storm cluster.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY notifier ./notifier
# The package and its runtime dependencies (no dev extras) in a venv that is copied as is.
RUN python -m venv /opt/notifier \
 && /opt/notifier/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/notifier/bin/pip uninstall --yes --quiet pip

FROM python:3.11-slim
ENV PATH=/opt/notifier/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 notifier \
 && useradd --system --uid 10001 --gid notifier --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin notifier \
 && mkdir -p /app/config \
 && chown notifier:notifier /app
COPY --from=build /opt/notifier /opt/notifier
WORKDIR /app
USER 10001:10001

# /metrics, /healthz, /readyz on server.listen (0.0.0.0:9464 to reach it from outside)
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]

# SIGTERM stops gracefully: the poll and the deliveries in hand finish first (allow 45 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["notifier"]
CMD ["run"]
