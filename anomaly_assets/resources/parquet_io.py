"""Parquet IO manager for daily-partitioned frames: one file per asset partition.

``base_path`` is a local path or any fsspec URL (``s3://bucket/prefix``, ``gs://...``,
``memory://`` in tests), so every worker of a distributed run can reach the same files.

A run may cover several partitions (a single-run backfill): outputs are split by the day of
their ``timestamp`` column, and inputs spanning several partitions are concatenated. On a local
path each file is written to a temporary name and renamed; on an object store a PUT is atomic by
itself. Either way a failed write never leaves a half-written partition.
"""

from __future__ import annotations

import os
import uuid

import dagster as dg
import pandas as pd
from upath import UPath

ALLOW_MISSING_PARTITIONS = "allow_missing_partitions"  # AssetIn metadata: optional lookback input


class PartitionedParquetIOManager(dg.ConfigurableIOManager):
    base_path: str

    def _path(self, asset_key: dg.AssetKey, partition_key: str | None) -> UPath:
        root = UPath(self.base_path).joinpath(*asset_key.path)
        return root / f"{partition_key}.parquet" if partition_key else root.with_suffix(".parquet")

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if obj is None:
            return
        if not context.has_asset_partitions:
            self._write(self._path(context.asset_key, None), obj)
            return
        keys = context.asset_partition_keys
        if len(keys) == 1:
            self._write(self._path(context.asset_key, keys[0]), obj)
            return
        days = pd.to_datetime(obj["timestamp"], utc=True, errors="coerce").dt.strftime("%Y-%m-%d")
        # A row dated outside the run's days (or undated) is kept with the first day, where
        # validation quarantines it: nothing a source delivered is dropped here.
        days = days.where(days.isin(keys), keys[0])
        for key in keys:
            self._write(self._path(context.asset_key, key), obj.loc[days == key].reset_index(drop=True))

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        asset_key = context.asset_key
        if not context.has_asset_partitions:
            return self._read(self._path(asset_key, None))
        allow_missing = bool((context.definition_metadata or {}).get(ALLOW_MISSING_PARTITIONS))
        frames = []
        for key in context.asset_partition_keys:
            path = self._path(asset_key, key)
            if path.exists():
                frames.append(self._read(path))
            elif not allow_missing:
                raise FileNotFoundError(
                    f"partition {key} of {asset_key.to_user_string()} has not been materialized "
                    f"(no file at {path}); materialize it first"
                )
            else:
                context.log.warning(f"optional partition {key} of {asset_key.to_user_string()} is missing; continuing")
        if not frames:
            if allow_missing:
                return pd.DataFrame()
            raise FileNotFoundError(f"no partitions of {asset_key.to_user_string()} to load")
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    @staticmethod
    def _read(path: UPath) -> pd.DataFrame:
        with path.open("rb") as handle:
            return pd.read_parquet(handle)

    @staticmethod
    def _write(path: UPath, frame: pd.DataFrame) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.protocol not in ("", "file", "local"):
            with path.open("wb") as handle:
                frame.to_parquet(handle, index=False)
            return
        temporary = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
        try:
            frame.to_parquet(temporary.path, index=False)
            os.replace(temporary.path, path.path)
        finally:
            if temporary.exists():
                temporary.unlink()
