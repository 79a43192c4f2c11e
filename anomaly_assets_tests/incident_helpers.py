"""Hand-built scored rows and a materialize helper for the incident and alerting tests."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from anomaly_assets.defs.alerting.assets import alert_deliveries, device_incidents
from anomaly_assets.defs.partitions import daily_partitions
from anomaly_assets.resources import PartitionedParquetIOManager, ResultsStore
from anomaly_assets.resources.alert_router import AlertRouter

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# scored_anomalies as an upstream whose partitions the tests write themselves
SCORED = dg.AssetSpec("scored_anomalies", partitions_def=daily_partitions)


def device_rows(device: str, cohort: str, start: str, flags: str, severity: float = 72.0, freq: str = "5min") -> pd.DataFrame:
    """One row per character of ``flags`` ('1' anomalous, '0' normal), every ``freq`` from ``start``."""
    stamps = pd.date_range(pd.Timestamp(start, tz="UTC"), periods=len(flags), freq=freq)
    anomalous = [c == "1" for c in flags]
    return pd.DataFrame(
        {
            "device_id": device,
            "timestamp": stamps,
            "cohort": cohort,
            "score": [0.7 if a else 0.1 for a in anomalous],
            "severity": [severity if a else 12.0 for a in anomalous],
            "is_anomaly": anomalous,
            "top_feature_1": "cpu_util_pct__dev_1h",
            "top_feature_2": "memory_used_pct__dev_1h",
            "top_feature_3": "battery_temp_c__cohort_z",
            "model_name": "fleet_anomaly_detector",
            "model_version": "1",
            "partition_date": stamps.strftime("%Y-%m-%d"),
        }
    )


def scored(*frames: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True).sort_values(["device_id", "timestamp"], ignore_index=True)


def write_scored_partitions(base: Path, frame: pd.DataFrame) -> list[str]:
    """Write ``frame`` as scored_anomalies parquet partitions, one file per day."""
    days = sorted(frame["partition_date"].unique())
    for day in days:
        path = base / "scored_anomalies" / f"{day}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.loc[frame["partition_date"] == day].reset_index(drop=True).to_parquet(path, index=False)
    return days


class AlertingHarness:
    """device_incidents and alert_deliveries on a throw-away results DB and parquet folder."""

    def __init__(self, root: Path, router: AlertRouter | None = None):
        self.root = root
        self.parquet = root / "parquet"
        self.store = ResultsStore(url=f"sqlite:///{root / 'results.db'}")
        self.router = router or AlertRouter()
        self.instance = dg.DagsterInstance.ephemeral()

    def run(
        self,
        partition_key: str | None = None,
        partition_range: tuple[str, str] | None = None,
        incidents_config: dict | None = None,
        assets: tuple = (device_incidents, alert_deliveries),
    ) -> dg.ExecuteInProcessResult:
        tags = {}
        if partition_range:
            tags = {
                "dagster/asset_partition_range_start": partition_range[0],
                "dagster/asset_partition_range_end": partition_range[1],
            }
        run_config = dict(QUIET)
        if incidents_config and device_incidents in assets:
            run_config["ops"] = {"device_incidents": {"config": incidents_config}}
        return dg.materialize(
            [SCORED, device_incidents, alert_deliveries],
            selection=list(assets),
            partition_key=partition_key,
            tags=tags,
            instance=self.instance,
            run_config=run_config,
            resources={
                "io_manager": PartitionedParquetIOManager(base_path=str(self.parquet)),
                "results_store": self.store,
                "alert_router": self.router,
            },
        )
