"""Where the project keeps its state and which environment it runs in, from environment variables.

``ANOMALY_ASSETS_ENV`` picks the environment: ``embedded`` (default: SQLite and local files under
``ANOMALY_ASSETS_HOME``) or ``production`` (PostgreSQL and an MLflow server, from ``EnvVar``s).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

ENVIRONMENTS = ("embedded", "production")
EXECUTORS = ("multiprocess", "in_process", "celery")  # or unset: see anomaly_assets/defs/executors.py
SOURCES = ("synthetic", "sql", "odbc", "files")


@dataclasses.dataclass(frozen=True)
class Settings:
    home: Path
    environment: str = "embedded"
    start_date: dt.date = dt.date(2026, 11, 1)  # first daily partition, and the synthetic fleet's first day
    training_days: int = 7
    fleet_devices: int = 200
    fleet_seed: int = 7
    fleet_shift_offset_days: int | None = None  # synthetic fleet-wide firmware shift (exercises drift)
    scoring_time: dt.time = dt.time(2, 0)  # ANOMALY_ASSETS_SCORING_TIME (UTC): the daily run scores yesterday
    retraining_cron: str = "0 4 * * 1"  # weekly: train, register, gate
    drift_min_features: int = 3  # K: drifted features that make a partition drifted
    drift_consecutive_partitions: int = 2  # M: drifted partitions in a row that request retraining
    drift_sensor_interval_seconds: int = 300
    # Devices per chunk of the partition path (validated_telemetry, device_features,
    # scored_anomalies, feature_drift): their memory depends on it, not on the fleet's size.
    devices_per_chunk: int = 1_000
    # Devices per range of device_range_scoring_job: a day's ranges are scored by parallel steps
    # (Celery workers), each range a whole number of chunks.
    devices_per_range: int = 5_000
    # Each MLflow request times out after this and is retried once: an unreachable tracking server
    # fails a step or a CLI command in about twice this, not MLflow's default of ~4 minutes.
    mlflow_timeout_seconds: int = 10
    # How a run's steps execute: one machine (multiprocess, in_process), or Celery workers on a
    # Redis broker (ANOMALY_ASSETS_CELERY_BROKER) that share ANOMALY_ASSETS_STORAGE_PATH. Unset
    # (""): the scoring job in one process, the other jobs a process per step.
    executor: str = ""
    # Telemetry source (ANOMALY_ASSETS_SOURCE). Secrets never live here: the SQL URL / ODBC
    # connection string / inventory URL are read by build_resources through dagster.EnvVar
    # (ANOMALY_ASSETS_SOURCE_URL, ANOMALY_ASSETS_SOURCE_ODBC, ANOMALY_ASSETS_INVENTORY_URL).
    source: str = "synthetic"
    source_table: str = ""  # ANOMALY_ASSETS_SOURCE_TABLE (sql/odbc), or
    source_query: str = ""  # ANOMALY_ASSETS_SOURCE_QUERY (sql: :start/:end; odbc: two '?')
    source_glob: str = ""  # ANOMALY_ASSETS_SOURCE_GLOB (files)
    source_format: str = "auto"  # ANOMALY_ASSETS_SOURCE_FORMAT (files: csv, parquet, auto)
    # ANOMALY_ASSETS_SOURCE_MAPPING: JSON of ColumnMapping, e.g. {"device_id": "dev", "metrics": {"cpu": "cpu_pct"}}
    source_mapping: str = ""
    inventory_table: str = "devices"  # ANOMALY_ASSETS_INVENTORY_TABLE
    inventory_columns: str = ""  # ANOMALY_ASSETS_INVENTORY_COLUMNS: JSON {cohort attribute: inventory column}

    def __post_init__(self) -> None:
        if self.environment not in ENVIRONMENTS:
            raise ValueError(f"ANOMALY_ASSETS_ENV must be one of {ENVIRONMENTS}, got {self.environment!r}")
        if self.source not in SOURCES:
            raise ValueError(f"ANOMALY_ASSETS_SOURCE must be one of {SOURCES}, got {self.source!r}")
        if self.executor and self.executor not in EXECUTORS:
            raise ValueError(f"ANOMALY_ASSETS_EXECUTOR must be one of {EXECUTORS}, got {self.executor!r}")
        if self.training_days < 2:
            raise ValueError(f"training_days must be at least 2 (fit + validation), got {self.training_days}")
        if self.devices_per_chunk < 1:
            raise ValueError(f"ANOMALY_ASSETS_DEVICES_PER_CHUNK must be at least 1, got {self.devices_per_chunk}")
        if self.devices_per_range < 1:
            raise ValueError(f"ANOMALY_ASSETS_DEVICES_PER_RANGE must be at least 1, got {self.devices_per_range}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls(home=Path(".anomaly_home"))
        return cls(
            home=Path(env.get("ANOMALY_ASSETS_HOME", ".anomaly_home")).absolute(),
            environment=env.get("ANOMALY_ASSETS_ENV", defaults.environment),
            start_date=dt.date.fromisoformat(env.get("ANOMALY_ASSETS_START_DATE", defaults.start_date.isoformat())),
            training_days=int(env.get("ANOMALY_ASSETS_TRAINING_DAYS", defaults.training_days)),
            fleet_devices=int(env.get("ANOMALY_ASSETS_FLEET_DEVICES", defaults.fleet_devices)),
            fleet_seed=int(env.get("ANOMALY_ASSETS_FLEET_SEED", defaults.fleet_seed)),
            fleet_shift_offset_days=(
                int(env["ANOMALY_ASSETS_FLEET_SHIFT_OFFSET_DAYS"]) if env.get("ANOMALY_ASSETS_FLEET_SHIFT_OFFSET_DAYS") else None
            ),
            scoring_time=_time_of_day(env),
            retraining_cron=env.get("ANOMALY_ASSETS_RETRAINING_CRON", defaults.retraining_cron),
            drift_min_features=int(env.get("ANOMALY_ASSETS_DRIFT_MIN_FEATURES", defaults.drift_min_features)),
            drift_consecutive_partitions=int(
                env.get("ANOMALY_ASSETS_DRIFT_CONSECUTIVE_PARTITIONS", defaults.drift_consecutive_partitions)
            ),
            drift_sensor_interval_seconds=int(
                env.get("ANOMALY_ASSETS_DRIFT_SENSOR_INTERVAL_SECONDS", defaults.drift_sensor_interval_seconds)
            ),
            devices_per_chunk=int(env.get("ANOMALY_ASSETS_DEVICES_PER_CHUNK", defaults.devices_per_chunk)),
            devices_per_range=int(env.get("ANOMALY_ASSETS_DEVICES_PER_RANGE", defaults.devices_per_range)),
            mlflow_timeout_seconds=int(env.get("ANOMALY_ASSETS_MLFLOW_TIMEOUT_SECONDS", defaults.mlflow_timeout_seconds)),
            executor=env.get("ANOMALY_ASSETS_EXECUTOR", defaults.executor),
            source=env.get("ANOMALY_ASSETS_SOURCE", defaults.source) or defaults.source,
            source_table=env.get("ANOMALY_ASSETS_SOURCE_TABLE", ""),
            source_query=env.get("ANOMALY_ASSETS_SOURCE_QUERY", ""),
            source_glob=env.get("ANOMALY_ASSETS_SOURCE_GLOB", ""),
            source_format=env.get("ANOMALY_ASSETS_SOURCE_FORMAT", defaults.source_format) or defaults.source_format,
            source_mapping=env.get("ANOMALY_ASSETS_SOURCE_MAPPING", ""),
            inventory_table=env.get("ANOMALY_ASSETS_INVENTORY_TABLE", defaults.inventory_table) or defaults.inventory_table,
            inventory_columns=env.get("ANOMALY_ASSETS_INVENTORY_COLUMNS", ""),
        )

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def parquet_dir(self) -> Path:
        return self.home / "parquet"

    @property
    def results_url(self) -> str:
        return f"sqlite:///{self.home / 'results.db'}"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifact_location(self) -> str:
        return (self.mlflow_dir / "artifacts").as_uri()


def prepare_embedded_home(settings: Settings) -> Path:
    """Create the home's folders and a Dagster instance config (SQLite storage, no telemetry)."""
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    config = settings.dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return settings.dagster_home


def export_to_environment(settings: Settings) -> None:
    """Make this process (and the code location it loads) use ``settings``."""
    os.environ.update(
        {
            "ANOMALY_ASSETS_HOME": str(settings.home),
            "ANOMALY_ASSETS_ENV": settings.environment,
            "ANOMALY_ASSETS_START_DATE": settings.start_date.isoformat(),
            "ANOMALY_ASSETS_TRAINING_DAYS": str(settings.training_days),
            "ANOMALY_ASSETS_FLEET_DEVICES": str(settings.fleet_devices),
            "ANOMALY_ASSETS_FLEET_SEED": str(settings.fleet_seed),
            "ANOMALY_ASSETS_DEVICES_PER_CHUNK": str(settings.devices_per_chunk),
            "ANOMALY_ASSETS_DEVICES_PER_RANGE": str(settings.devices_per_range),
            "ANOMALY_ASSETS_FLEET_SHIFT_OFFSET_DAYS": (
                "" if settings.fleet_shift_offset_days is None else str(settings.fleet_shift_offset_days)
            ),
            "DAGSTER_HOME": str(settings.dagster_home),
        }
    )


def _time_of_day(env) -> dt.time:
    """ANOMALY_ASSETS_SCORING_TIME as HH:MM (UTC). The daily run follows the daily partitions, so
    only its time of day is a setting; the old ANOMALY_ASSETS_SCORING_CRON is refused by name."""
    if env.get("ANOMALY_ASSETS_SCORING_CRON"):
        raise ValueError(
            "ANOMALY_ASSETS_SCORING_CRON is no longer read: the daily run scores each day once, after it ends; "
            "set its time of day instead, e.g. ANOMALY_ASSETS_SCORING_TIME=02:00 (UTC)"
        )
    text = env.get("ANOMALY_ASSETS_SCORING_TIME", "02:00").strip()
    try:
        hour, minute = (int(part) for part in text.split(":"))
        return dt.time(hour, minute)
    except ValueError:
        raise ValueError(f"ANOMALY_ASSETS_SCORING_TIME must be HH:MM (UTC), e.g. 02:00; got {text!r}") from None
