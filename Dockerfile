# One image for every service of the production stack (see docker-compose.yml).
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends unixodbc odbc-postgresql \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 anomaly

WORKDIR /opt/anomaly_assets
COPY pyproject.toml constraints.txt README.md ./
COPY anomaly_assets ./anomaly_assets
RUN pip install --no-cache-dir -c constraints.txt .
COPY deploy/dagster.yaml workspace.production.yaml celery_worker.yaml ./
COPY deploy/mlflow-auth.ini ./deploy/

ENV DAGSTER_HOME=/opt/dagster/home \
    ANOMALY_ASSETS_ENV=production \
    ANOMALY_ASSETS_STORAGE_PATH=/data/storage
RUN mkdir -p "$DAGSTER_HOME" /data/storage /data/mlartifacts /data/mlflow-auth \
    && cp dagster.yaml "$DAGSTER_HOME/dagster.yaml" \
    && chown -R anomaly:anomaly /opt/dagster /data

USER anomaly
EXPOSE 3000 4000
CMD ["dagster", "api", "grpc", "-m", "anomaly_assets.definitions", "-h", "0.0.0.0", "-p", "4000"]
