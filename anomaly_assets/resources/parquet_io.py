"""Parquet IO manager for daily-partitioned frames: one file per asset partition.

``base_path`` is a local path or any fsspec URL (``s3://bucket/prefix``, ``gs://...``,
``memory://`` in tests), so every worker of a distributed run can reach the same files.

A run may cover several partitions (a single-run backfill): outputs are split by the day of
their ``timestamp`` column, and inputs spanning several partitions are concatenated. On a local
path each file is written to a temporary name and renamed; on an object store a PUT is atomic by
itself. Either way a failed write never leaves a half-written partition.

Fleet-sized partitions never need to be in memory at once:

- an asset returns a :class:`PartitionSpool` it filled a chunk of devices at a time; the IO
  manager moves its files into place, one row group per chunk, grouped by device;
- an input annotated :class:`DeviceChunks` is read a chunk of whole devices at a time, and
  parquet's row-group statistics let each chunk read only its own row groups.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable

import dagster as dg
import pandas as pd
from upath import UPath

from anomaly_assets.resources.device_chunks import (  # noqa: F401  (re-exported: where assets import them)
    DEFAULT_DEVICES_PER_CHUNK,
    DEVICE_COLUMN,
    PREVIEW_ROWS,
    ROW_GROUP_ROWS,
    DeviceChunks,
    day_keys,
    group_by_device,
)
from anomaly_assets.resources.partition_spool import PartitionSpool  # noqa: F401

ALLOW_MISSING_PARTITIONS = "allow_missing_partitions"  # AssetIn metadata: optional lookback input


class PartitionedParquetIOManager(dg.ConfigurableIOManager):
    base_path: str
    devices_per_chunk: int = DEFAULT_DEVICES_PER_CHUNK  # inputs read as DeviceChunks

    def _path(self, asset_key: dg.AssetKey, partition_key: str | None) -> UPath:
        root = UPath(self.base_path).joinpath(*asset_key.path)
        return root / f"{partition_key}.parquet" if partition_key else root.with_suffix(".parquet")

    def partition_path(self, asset_key: dg.AssetKey, partition_key: str | None) -> UPath:
        """Where a partition is stored: for a job of ops that reads an asset's partition directly."""
        return self._path(asset_key, partition_key)

    def put_partition(self, asset_key: dg.AssetKey, partition_key: str | None, file: str) -> None:
        """A finished local parquet file into the partition's place, as ``handle_output`` puts a spool's."""
        self._put(self._path(asset_key, partition_key), file)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | PartitionSpool) -> None:
        if obj is None:
            return
        if isinstance(obj, PartitionSpool):
            try:
                for key, file in obj.files().items():
                    self._put(self._path(context.asset_key, key), file)
            finally:
                obj.discard()
            return
        if not context.has_asset_partitions:
            self._write(self._path(context.asset_key, None), obj)
            return
        keys = context.asset_partition_keys
        if len(keys) == 1:
            self._write(self._path(context.asset_key, keys[0]), obj)
            return
        days = day_keys(obj, keys)
        for key in keys:
            self._write(self._path(context.asset_key, key), obj.loc[days == key].reset_index(drop=True))

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | DeviceChunks:
        chunked = _wants_chunks(context)
        asset_key = context.asset_key
        if not context.has_asset_partitions:
            paths = [self._path(asset_key, None)]
            if not paths[0].exists():
                raise FileNotFoundError(
                    f"{asset_key.to_user_string()} has not been materialized (no file at {paths[0]}); materialize it first"
                )
        else:
            paths = self._partition_paths(context)
        chunks = DeviceChunks(paths, self.devices_per_chunk)
        return chunks if chunked else chunks.frame()

    def _partition_paths(self, context: dg.InputContext) -> list[UPath]:
        asset_key = context.asset_key
        allow_missing = bool((context.definition_metadata or {}).get(ALLOW_MISSING_PARTITIONS))
        paths = []
        for key in context.asset_partition_keys:
            path = self._path(asset_key, key)
            if path.exists():
                paths.append(path)
            elif not allow_missing:
                raise FileNotFoundError(
                    f"partition {key} of {asset_key.to_user_string()} has not been materialized "
                    f"(no file at {path}); materialize it first"
                )
            else:
                context.log.warning(f"optional partition {key} of {asset_key.to_user_string()} is missing; continuing")
        if not paths and not allow_missing:
            raise FileNotFoundError(f"no partitions of {asset_key.to_user_string()} to load")
        return paths

    @staticmethod
    def _write(path: UPath, frame: pd.DataFrame) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.protocol not in ("", "file", "local"):
            with path.open("wb") as handle:
                frame.to_parquet(handle, index=False)
            return
        _replace(path, lambda temporary: frame.to_parquet(temporary, index=False))

    @staticmethod
    def _put(path: UPath, file: str) -> None:
        """A finished local file into place: renamed on a local path, one upload on a store."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.protocol not in ("", "file", "local"):
            with open(file, "rb") as source, path.open("wb") as target:
                shutil.copyfileobj(source, target, length=16 << 20)
            return
        _replace(path, lambda temporary: shutil.move(file, temporary))  # a rename on the same file system


def _replace(path: UPath, fill: Callable[[str], object]) -> None:
    """Fill a temporary file beside a local ``path``, then rename it over ``path``: readers see
    the old file or the whole new one, never a half-written one."""
    temporary = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        fill(temporary.path)
        os.replace(temporary.path, path.path)
    finally:
        if temporary.exists():
            temporary.unlink()


def _wants_chunks(context: dg.InputContext) -> bool:
    try:
        return context.dagster_type.typing_type is DeviceChunks
    except dg.DagsterInvariantViolationError:  # a context built by hand, without the input's type
        return False
