"""Telemetry sources: each returns the rows of a time window in the telemetry contract
(``device_id``, UTC ``timestamp``, cohort attributes, numeric metrics, optional labels)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from anomaly_assets.core import generator
from anomaly_assets.core.contract import TelemetryContract, load_contract

# The synthetic fleet's contract (columns, types, ranges, counters, bad-row limit) is the packaged,
# declarative anomaly_assets/contracts/telemetry_contract.yaml; see anomaly_assets.core.contract.


class TelemetrySource(dg.ConfigurableResource):
    """Base of every source; assets depend on this type, so any source can be configured."""

    def contract(self) -> TelemetryContract:
        raise NotImplementedError

    def label_columns(self) -> tuple[str, ...]:
        return ()

    def describe(self) -> str:
        raise NotImplementedError

    def read_window(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Rows with ``start <= timestamp < end``."""
        raise NotImplementedError

    def read_window_chunks(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[pd.DataFrame]:
        """The same rows in parts, so a fleet's day never has to be in memory at once. Sources
        that can stream override it; by default the window is one part."""
        yield self.read_window(start, end)


class SyntheticFleetSource(TelemetrySource):
    """The deterministic synthetic fleet with injected, labelled faults (the embedded default)."""

    n_devices: int = 200
    seed: int = 7
    interval_minutes: int = 5
    start_date: str = "2026-11-01"
    device_fault_rate: float = 0.05
    cohort_regression_offset_days: int | None = 8
    fleet_shift_offset_days: int | None = None

    def fleet_config(self) -> generator.FleetConfig:
        return generator.FleetConfig(
            n_devices=self.n_devices,
            seed=self.seed,
            interval_minutes=self.interval_minutes,
            start_date=dt.date.fromisoformat(self.start_date),
            device_fault_rate=self.device_fault_rate,
            cohort_regression_offset_days=self.cohort_regression_offset_days,
            fleet_shift_offset_days=self.fleet_shift_offset_days,
        )

    def contract(self) -> TelemetryContract:
        return load_contract()

    def label_columns(self) -> tuple[str, ...]:
        return generator.LABEL_COLUMNS

    def describe(self) -> str:
        return f"synthetic fleet (devices={self.n_devices}, seed={self.seed})"

    def read_window(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        frames = list(self.read_window_chunks(start, end))
        if not frames:
            config = self.fleet_config()
            return generator.generate_day(config, config.start_date).iloc[0:0]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def read_window_chunks(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[pd.DataFrame]:
        """A day of the whole fleet at a time (the generator draws a day's noise fleet-wide)."""
        config = self.fleet_config()
        for day in pd.date_range(start.normalize(), end - pd.Timedelta(1, "ns"), freq="D"):
            if day.date() >= config.start_date:
                frame = generator.generate_day(config, day.date())
                in_window = (frame["timestamp"] >= start) & (frame["timestamp"] < end)
                yield frame if in_window.all() else frame.loc[in_window].reset_index(drop=True)
