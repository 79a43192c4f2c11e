"""A device's rows over a few days, read from the partition parquet files the assets wrote.

The results database keeps only the flagged rows (``anomaly_events``) and a daily summary; a
device's metrics over time live in the ``device_features`` partitions and its scores in the
``scored_anomalies`` partitions, one file per day under the IO manager's base path (the same
setting the assets use: ``ANOMALY_ASSETS_HOME/parquet`` embedded, ``ANOMALY_ASSETS_STORAGE_PATH``
in production, a local path or an fsspec URL). Files written by the chunked assets are grouped
by device, so a filter on ``device_id`` reads one row group per file. Nothing is written.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from upath import UPath

SCORE_COLUMNS = ["device_id", "timestamp", "score", "severity", "is_anomaly", "model_version"]
LABEL_COLUMNS = ["is_injected_anomaly", "anomaly_type"]


def metric_columns(names: list[str]) -> list[str]:
    """The raw metrics of a feature file: the columns the features derive ``__delta`` from."""
    present = set(names)
    return [n for n in names if "__" not in n and f"{n}__delta" in present]


class DeviceRows:
    def __init__(self, base_path: str):
        self.base_path = base_path

    def _file(self, asset: str, day: str) -> UPath:
        return UPath(self.base_path) / asset / f"{day}.parquet"

    def _read(self, asset: str, day: str, device_id: str, columns: list[str]) -> pd.DataFrame | None:
        path = self._file(asset, day)
        if not path.exists():
            return None
        with path.open("rb") as handle:
            file = pq.ParquetFile(handle)
            wanted = [c for c in columns if c in file.schema_arrow.names]
        with path.open("rb") as handle:
            return pq.read_table(handle, columns=wanted, filters=ds.field("device_id") == device_id).to_pandas()

    def read(self, device_id: str, first_day: str, last_day: str) -> tuple[pd.DataFrame, list[str], list[str]]:
        """The device's rows over [first_day, last_day]: timestamp, its metrics, score, severity,
        is_anomaly (and fault labels when the source has them); the metric names; the days
        whose files were missing."""
        frames, metrics, missing = [], None, []
        day = dt.date.fromisoformat(first_day)
        while day <= dt.date.fromisoformat(last_day):
            key = day.isoformat()
            features_path = self._file("device_features", key)
            if features_path.exists():
                with features_path.open("rb") as handle:
                    names = pq.ParquetFile(handle).schema_arrow.names
                day_metrics = metric_columns(names)
                metrics = metrics or day_metrics
                features = self._read("device_features", key, device_id, ["device_id", "timestamp", *day_metrics, *LABEL_COLUMNS])
            else:
                features = None
            scores = self._read("scored_anomalies", key, device_id, SCORE_COLUMNS)
            if features is None and scores is None:
                missing.append(key)
            elif features is None:
                frames.append(scores)
            elif scores is None:
                frames.append(features)
            else:
                frames.append(features.merge(scores, on=["device_id", "timestamp"], how="left"))
            day += dt.timedelta(days=1)
        if not frames:
            return pd.DataFrame(columns=["timestamp"]), metrics or [], missing
        rows = pd.concat(frames, ignore_index=True).sort_values("timestamp", ignore_index=True)
        rows["timestamp"] = pd.to_datetime(rows["timestamp"], utc=True)
        return rows, metrics or [], missing
