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
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow.compute as pc
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

    def _read(self, asset: str, day: str, device_id: str, columns: list[str] | None) -> tuple[pd.DataFrame | None, list[str]]:
        """The device's rows of one partition file and the file's column names (None, [] without
        a file). ``columns`` None: the key columns, the raw metrics and the labels. The file is
        opened once, and only the row groups whose device_id statistics can hold the device are
        read (files of the chunked assets hold a chunk of devices per row group)."""
        path = self._file(asset, day)
        if not path.exists():
            return None, []
        with path.open("rb") as handle:
            file = pq.ParquetFile(handle)
            names = file.schema_arrow.names
            if columns is None:
                columns = ["device_id", "timestamp", *metric_columns(names), *LABEL_COLUMNS]
            wanted = [c for c in columns if c in names]
            table = file.read_row_groups(_groups_holding(file, device_id), columns=wanted)
        if "device_id" in table.column_names:
            table = table.filter(pc.equal(table["device_id"], device_id))
        return table.to_pandas(), names

    def read(self, device_id: str, first_day: str, last_day: str) -> tuple[pd.DataFrame, list[str], list[str]]:
        """The device's rows over [first_day, last_day]: timestamp, its metrics, score, severity,
        is_anomaly (and fault labels when the source has them); the metric names; the days
        whose files were missing. The files are read in parallel (pyarrow releases the GIL)."""
        days, day = [], dt.date.fromisoformat(first_day)
        while day <= dt.date.fromisoformat(last_day):
            days.append(day.isoformat())
            day += dt.timedelta(days=1)
        with ThreadPoolExecutor(max_workers=min(8, 2 * len(days))) as pool:
            features = pool.map(lambda d: self._read("device_features", d, device_id, None), days)
            scores = pool.map(lambda d: self._read("scored_anomalies", d, device_id, SCORE_COLUMNS), days)
            pairs = list(zip(days, features, scores, strict=True))
        frames, missing, names = [], [], {}
        for key, (day_features, feature_names), (day_scores, _) in pairs:
            names[key] = metric_columns(feature_names)
            if day_features is None and day_scores is None:
                missing.append(key)
            elif day_features is None or day_scores is None:
                frames.append(day_scores if day_features is None else day_features)
            else:
                frames.append(day_features.merge(day_scores, on=["device_id", "timestamp"], how="left"))
        metrics = next((m for m in names.values() if m), [])
        if not frames:
            return pd.DataFrame(columns=["timestamp"]), metrics, missing
        rows = pd.concat(frames, ignore_index=True).sort_values("timestamp", ignore_index=True)
        rows["timestamp"] = pd.to_datetime(rows["timestamp"], utc=True)
        return rows, metrics, missing


def _groups_holding(file: pq.ParquetFile, device_id: str) -> list[int]:
    """Row groups whose device_id range can hold ``device_id`` (all, without statistics)."""
    if "device_id" not in file.schema_arrow.names:
        return list(range(file.num_row_groups))
    column = file.schema_arrow.names.index("device_id")
    groups = []
    for index in range(file.num_row_groups):
        stats = file.metadata.row_group(index).column(column).statistics
        if stats is None or not stats.has_min_max or stats.min <= device_id <= stats.max:
            groups.append(index)
    return groups
