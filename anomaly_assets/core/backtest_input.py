"""The backtest's input: a long-format file checked and normalized as the assets take telemetry
(see :mod:`anomaly_assets.core.evaluation` for the format)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

RESERVED = ("device_id", "timestamp", "split", "label")


class EvaluationInputError(ValueError):
    """The input file does not have the backtest format: the message says what is wrong."""


def _set_aside_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """The contract's uniqueness rule: of exact copies the first is kept; rows of one (device_id,
    timestamp) that differ are all set aside, since nothing says which is right."""
    keyed = frame.duplicated(["device_id", "timestamp"], keep=False).to_numpy()
    if not keyed.any():
        return frame, 0, 0
    candidates = frame.loc[keyed]
    copies = candidates.astype("str").duplicated(keep="first").to_numpy()
    distinct = candidates.loc[~copies]
    per_key = distinct.groupby(["device_id", "timestamp"], sort=False)["device_id"].transform("size")
    conflicting = per_key.index[(per_key > 1).to_numpy()]
    drop = candidates.index[copies].union(conflicting)
    conflicting_rows = int(candidates.index.isin(conflicting).sum()) + int(
        candidates.loc[copies].set_index(["device_id", "timestamp"]).index.isin(
            distinct.loc[conflicting].set_index(["device_id", "timestamp"]).index
        ).sum()
    )
    return frame.drop(index=drop), len(drop) - conflicting_rows, conflicting_rows


def prepare_input(
    frame: pd.DataFrame, cohort_columns: Sequence[str] = (), train_share: float = 0.5
) -> tuple[pd.DataFrame, list[str]]:
    """Check and normalize a long-format frame; returns it (with boolean ``is_train``) and the
    metrics. ``out.attrs`` counts the duplicate and conflicting rows set aside."""
    missing = [c for c in ("device_id", "timestamp") if c not in frame]
    if missing:
        raise EvaluationInputError(f"the input lacks required column(s) {missing}; it has {list(frame.columns)[:20]}")
    absent = [c for c in cohort_columns if c not in frame]
    if absent:
        raise EvaluationInputError(f"cohort column(s) {absent} are not in the input")
    out = frame.copy()
    out["device_id"] = out["device_id"].astype("str")
    timestamps = pd.to_datetime(out["timestamp"], utc=True, errors="coerce")
    if timestamps.isna().any():
        bad = out.loc[timestamps.isna(), "timestamp"].iloc[0]
        raise EvaluationInputError(f"{int(timestamps.isna().sum())} timestamp(s) cannot be parsed, e.g. {bad!r}")
    out["timestamp"] = timestamps.dt.as_unit("ns")
    for column in cohort_columns:
        out[column] = out[column].astype("str")
    metrics = [
        c
        for c in out.columns
        if c not in RESERVED and c not in cohort_columns and pd.api.types.is_numeric_dtype(out[c]) and not pd.api.types.is_bool_dtype(out[c])
    ]
    if not metrics:
        raise EvaluationInputError("the input has no numeric metric column besides device_id/timestamp/split/label")
    out[metrics] = out[metrics].astype(np.float64)
    out, duplicates, conflicting = _set_aside_duplicates(out)
    if "label" in out:
        labels = pd.to_numeric(out["label"], errors="coerce")
        if not labels.dropna().isin([0, 1]).all():
            raise EvaluationInputError("label must be 0 or 1 (or empty on unlabelled training rows)")
        out["label"] = labels
    if "split" in out:
        split = out["split"].astype("str").str.lower()
        unknown = sorted(set(split) - {"train", "test"})
        if unknown:
            raise EvaluationInputError(f"split must be 'train' or 'test', got {unknown[:5]}")
        out["is_train"] = (split == "train").to_numpy()
        out = out.drop(columns="split")
    else:
        first = out.groupby("device_id")["timestamp"].transform("min")
        last = out.groupby("device_id")["timestamp"].transform("max")
        out["is_train"] = (out["timestamp"] <= first + (last - first) * train_share).to_numpy()
    out = out.sort_values(["device_id", "timestamp"], kind="stable", ignore_index=True)
    if not (~out["is_train"]).any():
        raise EvaluationInputError("the input has no test rows")
    if not out["is_train"].any():
        raise EvaluationInputError("the input has no training rows")
    if "label" not in out or out.loc[~out["is_train"], "label"].isna().all():
        raise EvaluationInputError("the test rows carry no labels: a backtest needs a 'label' column (0/1)")
    out.attrs = {"duplicate_rows": duplicates, "conflicting_rows": conflicting}
    return out, metrics


def read_long(path: str) -> pd.DataFrame:
    """A long-format CSV or parquet file (by extension)."""
    if str(path).endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"device_id": str})
