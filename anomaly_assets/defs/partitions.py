"""Daily partitions and the time-window helpers every partitioned asset uses."""

from __future__ import annotations

import warnings

import dagster as dg
import pandas as pd

from anomaly_assets.settings import Settings

# Single-run backfill policies and optional upstream partitions are deliberate choices here.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
# So are partitioned check specs (a check's result names its partition); dagster is pinned exactly.
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)

SETTINGS = Settings.from_env()
daily_partitions = dg.DailyPartitionsDefinition(start_date=SETTINGS.start_date.isoformat(), timezone="UTC")

# device_features of day D read day D-1 too, so rolling windows continue across midnight.
previous_day_lookback = dg.TimeWindowPartitionMapping(
    start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True
)
# Training partition D is fitted on the training_days days ending with D.
training_window = dg.TimeWindowPartitionMapping(
    start_offset=-(SETTINGS.training_days - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
)


def partition_window(context: dg.AssetExecutionContext) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of the run's partitions, which span several days in a single-run backfill."""
    window = context.partition_time_window
    return pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")


def days_in(start: pd.Timestamp, end: pd.Timestamp) -> list[str]:
    return [d.strftime("%Y-%m-%d") for d in pd.date_range(start, end, freq="D", inclusive="left")]


def markdown_preview(frame: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    if frame.empty:
        return dg.MetadataValue.md("_no rows_")
    head = frame.head(rows)
    # A '|' inside a value (cohort keys like Zebra|TC52|13) would split the markdown cell.
    escaped = head.apply(lambda c: c.astype("str").str.replace("|", r"\|", regex=False) if c.dtype == object or pd.api.types.is_string_dtype(c) else c)
    return dg.MetadataValue.md(escaped.to_markdown(index=False))


def partition_metadata(context: dg.AssetExecutionContext, by_partition: dict[str, dict]) -> dict:
    """Each partition's own metadata (figures accumulated over the chunks that built it): returned
    for the Output of one partition; for a range (a single-run backfill) attached to each
    partition directly, and nothing is returned."""
    keys = context.partition_keys
    if len(keys) == 1:
        return by_partition[keys[0]]
    for key in keys:
        context.add_asset_metadata(by_partition[key], partition_key=key)
    return {}
