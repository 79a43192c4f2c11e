"""Telemetry sources: each returns the rows of a time window in the telemetry contract
(``device_id``, UTC ``timestamp``, cohort attributes, numeric metrics, optional labels)."""

from __future__ import annotations

import datetime as dt

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
        config = self.fleet_config()
        days = pd.date_range(start.normalize(), end - pd.Timedelta(1, "ns"), freq="D")
        frames = [generator.generate_day(config, d.date()) for d in days if d.date() >= config.start_date]
        if not frames:
            return generator.generate_day(config, config.start_date).iloc[0:0]
        frame = pd.concat(frames, ignore_index=True)
        return frame.loc[(frame["timestamp"] >= start) & (frame["timestamp"] < end)].reset_index(drop=True)
