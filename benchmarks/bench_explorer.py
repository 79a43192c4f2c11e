"""How fast the anomaly explorer's pages answer on a 10,000-device fleet.

Fills a results database and the partition files with the shapes the assets write for N devices
x D days (5-minute rows: 288 a device a day; ~1.5% of rows flagged; device incidents, cohort
incidents with their devices, quarantined rows, drift), grouped by device a chunk of 1,000
devices at a time, in row groups of ``ROW_GROUP_ROWS`` rows as the chunked assets write them;
then times every page through Flask's test client (the app's own work: queries, parquet reads,
figures, templates; no network) and prints the median and worst of several requests per page.

    .venv/bin/python benchmarks/bench_explorer.py                 # 10,000 devices x 14 days
    .venv/bin/python benchmarks/bench_explorer.py --devices 10000 --days 7 --repeat 7

The data is random, not scored by a model: it only has to be the size and layout of the real
tables and files. The target is under 1 s per page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from anomaly_assets.core.generator import METRICS
from anomaly_assets.explorer.app import DEVICE_RANGES, MAX_DEVICE_DAYS, create_app
from anomaly_assets.resources.parquet_io import ROW_GROUP_ROWS
from anomaly_assets.resources.results_store import (
    ResultsStore,
    anomaly_events,
    device_daily_summary,
    feature_drift_results,
    incident_partitions,
    incidents,
    quarantined_telemetry,
)

CHUNK = 1_000
ROWS_PER_DAY = 288
FLAGGED_SHARE = 0.015
COHORTS = [f"Maker{m}|Model{n}|{os}" for m in range(4) for n in range(2) for os in (13, 14)]
FEATURES = [f"{m}__{s}" for m in METRICS for s in ("cohort_z", "baseline_exceed", "dev_1h", "std_1h")]


def _day_files(base: Path, day: str, devices: np.ndarray, cohorts: np.ndarray, rng: np.random.Generator):
    """One day's device_features and scored_anomalies files, as the assets write them; returns
    the flagged rows and the per-device summary."""
    start = pd.Timestamp(day, tz="UTC")
    stamps = start + pd.to_timedelta(np.arange(ROWS_PER_DAY) * 5, unit="min")
    (base / "device_features").mkdir(parents=True, exist_ok=True)
    (base / "scored_anomalies").mkdir(parents=True, exist_ok=True)
    features_writer = scored_writer = None
    events, summaries = [], []
    for first in range(0, len(devices), CHUNK):
        ids = np.repeat(devices[first : first + CHUNK], ROWS_PER_DAY)
        rows = len(ids)
        frame = {"device_id": ids, "timestamp": np.tile(stamps, len(ids) // ROWS_PER_DAY)}
        for metric in METRICS:
            values = rng.normal(50, 10, rows)
            frame[metric] = values
            frame[f"{metric}__delta"] = np.r_[0.0, np.diff(values)]
        frame["is_injected_anomaly"] = rng.random(rows) < 0.01
        frame["anomaly_type"] = np.where(frame["is_injected_anomaly"], "spike", "normal")
        features = pa.Table.from_pandas(pd.DataFrame(frame), preserve_index=False)
        score = rng.beta(2, 8, rows)
        flagged = score > np.quantile(score, 1 - FLAGGED_SHARE)
        cohort = np.repeat(cohorts[first : first + CHUNK], ROWS_PER_DAY)
        top = rng.choice(FEATURES, size=(rows, 3))
        scored = pd.DataFrame({
            "device_id": ids, "timestamp": frame["timestamp"], "cohort": cohort, "score": score,
            "severity": np.clip(score * 120, 0, 100), "is_anomaly": flagged, "top_feature_1": top[:, 0],
            "top_feature_2": top[:, 1], "top_feature_3": top[:, 2], "model_name": "fleet_anomaly_detector",
            "model_version": "3", "partition_date": day,
        })  # fmt: skip
        table = pa.Table.from_pandas(scored, preserve_index=False)
        if features_writer is None:
            features_writer = pq.ParquetWriter(base / "device_features" / f"{day}.parquet", features.schema)
            scored_writer = pq.ParquetWriter(base / "scored_anomalies" / f"{day}.parquet", table.schema)
        features_writer.write_table(features, row_group_size=ROW_GROUP_ROWS)
        scored_writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        events.append(scored.loc[flagged])
        summaries.append(
            scored.groupby("device_id").agg(
                cohort=("cohort", "first"), samples=("score", "size"), anomalies=("is_anomaly", "sum"),
                max_severity=("severity", "max"), mean_score=("score", "mean"), top_feature=("top_feature_1", "first"),
            ).reset_index()
        )  # fmt: skip
    features_writer.close()
    scored_writer.close()
    events = pd.concat(events, ignore_index=True)
    summary = pd.concat(summaries, ignore_index=True).assign(
        partition_date=day, model_name="fleet_anomaly_detector", model_version="3"
    )
    return events, summary


def _id(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _incidents(day: str, events: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """A device incident for every device with 8+ flagged rows; a cohort incident for two cohorts."""
    start = pd.Timestamp(day, tz="UTC")
    per_device = events.groupby("device_id").agg(cohort=("cohort", "first"), n=("score", "size"), sev=("severity", "max"))
    per_device = per_device.loc[per_device["n"] >= 8].reset_index()
    begins = start + pd.to_timedelta(rng.integers(0, 1400, len(per_device)), unit="min")
    rows = pd.DataFrame({
        "incident_id": [_id(day, d) for d in per_device["device_id"]], "kind": "device",
        "device_id": per_device["device_id"], "cohort": per_device["cohort"],
        "status": np.where(rng.random(len(per_device)) < 0.2, "open", "closed"),
        "severity_level": pd.cut(per_device["sev"], [0, 65, 80, 90, 101], labels=["low", "medium", "high", "critical"]).astype(str),
        "started_at": begins, "opened_at": begins, "last_anomaly_at": begins + pd.Timedelta(minutes=30),
        "ended_at": begins + pd.Timedelta(minutes=60), "close_reason": "recovered", "samples": 20,
        "anomalous_samples": per_device["n"], "devices": 1, "cohort_devices": None, "peak_share": None,
        "device_ids": None, "max_severity": per_device["sev"], "mean_severity": per_device["sev"] * 0.8,
        "max_score": 0.6, "top_features": ", ".join(FEATURES[:3]), "cohort_incident_id": None,
        "first_partition": day, "last_partition": day, "model_name": "fleet_anomaly_detector", "model_version": "3",
    })  # fmt: skip
    cohort_rows = []
    for cohort in COHORTS[:2]:
        members = rows.loc[rows["cohort"] == cohort]
        cohort_id = _id(day, cohort)
        rows.loc[members.index, "cohort_incident_id"] = cohort_id
        cohort_rows.append({
            **rows.iloc[0].to_dict(), "incident_id": cohort_id, "kind": "cohort", "device_id": None, "cohort": cohort,
            "devices": len(members), "cohort_devices": len(members) * 2, "peak_share": 0.5,
            "device_ids": ", ".join(members["device_id"]), "cohort_incident_id": None,
        })  # fmt: skip
    return pd.concat([rows, pd.DataFrame(cohort_rows)], ignore_index=True)


def build(home: Path, devices: int, days: int, seed: int = 7) -> tuple[ResultsStore, str, dict]:
    rng = np.random.default_rng(seed)
    store = ResultsStore(url=f"sqlite:///{home / 'results.db'}")
    ids = np.array([f"dev-{i:06d}" for i in range(devices)])
    cohorts = np.array(COHORTS)[rng.integers(0, len(COHORTS), devices)]
    first = dt.date(2026, 11, 8)
    keys = [(first + dt.timedelta(days=i)).isoformat() for i in range(days)]
    every_incident = []
    for day in keys:
        events, summary = _day_files(home / "parquet", day, ids, cohorts, rng)
        store.replace_partitions(anomaly_events, [day], events[[c.name for c in anomaly_events.columns]])
        store.replace_partitions(device_daily_summary, [day], summary)
        day_incidents = _incidents(day, events, rng)
        every_incident.append(day_incidents)
        quarantined = pd.DataFrame({
            "partition_date": day, "device_id": rng.choice(ids, 2_000), "timestamp": f"{day} 10:00:00+00:00",
            "rule": rng.choice(["range.battery_level_pct", "not_null.device_id", "types.cpu_util_pct"], 2_000),
            "reason": "battery_level_pct = 140.0 outside [0, 100]", "row_json": '{"battery_level_pct": 140.0}',
        })  # fmt: skip
        store.replace_partitions(quarantined_telemetry, [day], quarantined)
        drift = pd.DataFrame({
            "partition_date": day, "feature": FEATURES, "psi": rng.random(len(FEATURES)) * 0.3, "ks": rng.random(len(FEATURES)) * 0.2,
            "reference_median": 1.0, "current_median": 1.1, "drifted": rng.random(len(FEATURES)) < 0.05, "model_version": "3",
        })  # fmt: skip
        store.replace_partitions(feature_drift_results, [day], drift)
    every_incident = pd.concat(every_incident, ignore_index=True)
    with store.engine.begin() as connection:
        ResultsStore.insert(connection, incidents, every_incident)
        ResultsStore.insert(connection, incident_partitions, pd.DataFrame({
            "partition_date": keys, "incidents": [int((every_incident["first_partition"] == d).sum()) for d in keys],
            "open_at_end": 0, "processed_at": pd.Timestamp.now(tz="UTC"), "run_id": "bench",
        }))  # fmt: skip
    last = keys[-1]
    worst = store.read_frame(
        "SELECT device_id FROM device_daily_summary WHERE partition_date = :d ORDER BY max_severity DESC LIMIT 1", {"d": last}
    )["device_id"].iloc[0]
    cohort_incident = every_incident.loc[(every_incident["kind"] == "cohort") & (every_incident["first_partition"] == last), "incident_id"].iloc[0]
    sizes = {
        "scored rows a day": devices * ROWS_PER_DAY,
        "anomaly_events": store.count(anomaly_events),
        "device_daily_summary": store.count(device_daily_summary),
        "incidents": len(every_incident),
        "quarantined_telemetry": store.count(quarantined_telemetry),
    }
    pages = {
        "days (home)": "/",
        "day overview": f"/days/{last}",
        "incidents of the day": f"/incidents?day={last}",
        "incidents, filtered, page 2": f"/incidents?day={last}&severity=medium&page=2",
        "cohort incident with its devices": f"/incidents/{cohort_incident}",
        "quarantine": f"/quarantine?day={last}",
    }
    for n in (n for n in DEVICE_RANGES if n <= days):  # the page's range choices, up to MAX_DEVICE_DAYS
        pages[f"device, {n} day{'s' if n > 1 else ''}"] = f"/devices/{worst}?from={keys[len(keys) - n]}&day={last}"
    return store, pages, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=MAX_DEVICE_DAYS, help="days stored (default: the most a device page shows)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        started = time.perf_counter()
        store, pages, sizes = build(home, args.devices, args.days)
        print(f"built {args.devices:,} devices x {args.days} days in {time.perf_counter() - started:.0f} s: "
              + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))  # fmt: skip
        client = create_app(store, str(home / "parquet")).test_client()
        print(f"\n{'page':<46} {'median':>8} {'worst':>8}  (of {args.repeat} requests after one warm-up)")
        for name, url in pages.items():
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code, response.data[:500])
            seconds = []
            for _ in range(args.repeat):
                begin = time.perf_counter()
                response = client.get(url)
                seconds.append(time.perf_counter() - begin)
                assert response.status_code == 200
            print(f"{name:<46} {statistics.median(seconds) * 1000:>6.0f}ms {max(seconds) * 1000:>6.0f}ms")


if __name__ == "__main__":
    main()
