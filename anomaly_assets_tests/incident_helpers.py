"""Hand-built scored rows, a materialize helper and a recording HTTP server for the incident and
alerting tests."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from anomaly_assets.defs.alerting.assets import alert_deliveries, device_incidents
from anomaly_assets.defs.partitions import daily_partitions
from anomaly_assets.resources import PartitionedParquetIOManager, ResultsStore
from anomaly_assets.resources.parquet_io import DEFAULT_DEVICES_PER_CHUNK
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

    def __init__(self, root: Path, router: AlertRouter | None = None, devices_per_chunk: int = DEFAULT_DEVICES_PER_CHUNK):
        self.root = root
        self.devices_per_chunk = devices_per_chunk
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
                "io_manager": PartitionedParquetIOManager(base_path=str(self.parquet), devices_per_chunk=self.devices_per_chunk),
                "results_store": self.store,
                "alert_router": self.router,
            },
        )


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server: RecordingServer = self.server  # type: ignore[assignment]
        with server.lock:
            plan = server.plans.get(self.path, [])
            status = plan.pop(0) if plan else 200
            server.requests.append({"path": self.path, "status": status, "headers": dict(self.headers), "json": json.loads(body)})
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok" if status < 300 else b"boom")

    def log_message(self, *args):
        pass


class RecordingServer(ThreadingHTTPServer):
    """Records every POST; ``plans[path]`` lists the status codes to answer first (then 200)."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.plans: dict[str, list[int]] = {}
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def posts(self, path: str, status: int | None = None) -> list[dict]:
        return [r["json"] for r in self.requests if r["path"] == path and (status is None or r["status"] == status)]


@pytest.fixture
def http_server():
    server = RecordingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
