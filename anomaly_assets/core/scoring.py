"""Summaries of scored rows: per device and day, and the most anomalous devices."""

from __future__ import annotations

import numpy as np
import pandas as pd

_SUMMARY_STRINGS = ("partition_date", "device_id", "cohort", "model_name", "model_version", "top_feature_1")


def daily_device_summary(scored: pd.DataFrame) -> pd.DataFrame:
    """One row per (partition_date, device_id): samples, anomalies, worst severity, main feature."""
    fast = _daily_device_summary_coded(scored)
    if fast is not None:
        return fast
    grouped = scored.groupby(["partition_date", "device_id"], sort=True)
    summary = grouped.agg(
        cohort=("cohort", "first"),
        samples=("score", "size"),
        anomalies=("is_anomaly", "sum"),
        max_severity=("severity", "max"),
        mean_score=("score", "mean"),
        model_name=("model_name", "first"),
        model_version=("model_version", "first"),
    ).reset_index()
    flagged = scored.loc[scored["is_anomaly"]]
    # The most frequent first contributor of each device's flagged rows (ties: alphabetical).
    counts = flagged.groupby(["partition_date", "device_id", "top_feature_1"]).size().rename("n").reset_index()
    top = counts.sort_values(["partition_date", "device_id", "n", "top_feature_1"], ascending=[True, True, False, True])
    top = top.drop_duplicates(["partition_date", "device_id"])[["partition_date", "device_id", "top_feature_1"]]
    summary = summary.merge(top.rename(columns={"top_feature_1": "top_feature"}), on=["partition_date", "device_id"], how="left")
    return summary.astype({"samples": "int64", "anomalies": "int64"})


def _daily_device_summary_coded(scored: pd.DataFrame) -> pd.DataFrame | None:
    """``daily_device_summary`` grouped on integer codes instead of strings: the same frame.

    The groups' rows keep their order, so the numeric aggregations run the same pandas kernels
    on the same values; "first" is the group's first row (no value is missing, checked here).
    None when the frame is outside that case (empty, missing strings, other dtypes, no flags):
    the caller then groups the strings themselves.
    """
    if scored.empty or not all(
        c in scored and isinstance(scored[c].dtype, pd.StringDtype) and not scored[c].isna().any() for c in _SUMMARY_STRINGS
    ):
        return None
    is_anomaly = scored["is_anomaly"]
    if is_anomaly.dtype != bool or not is_anomaly.any():
        return None
    date_codes, dates = pd.factorize(scored["partition_date"], sort=True)
    device_codes, devices = pd.factorize(scored["device_id"], sort=True)
    key = date_codes.astype(np.int64) * len(devices) + device_codes
    groups, first = np.unique(key, return_index=True)  # sorted like the string keys; first rows
    grouped = scored[["score", "is_anomaly", "severity"]].groupby(key, sort=True)
    numbers = grouped.agg(
        samples=("score", "size"),
        anomalies=("is_anomaly", "sum"),
        max_severity=("severity", "max"),
        mean_score=("score", "mean"),
    )
    summary = pd.DataFrame(
        {
            "partition_date": dates.take(groups // len(devices)),
            "device_id": devices.take(groups % len(devices)),
            "cohort": scored["cohort"].array.take(first),
            "samples": numbers["samples"].to_numpy(),
            "anomalies": numbers["anomalies"].to_numpy(),
            "max_severity": numbers["max_severity"].to_numpy(),
            "mean_score": numbers["mean_score"].to_numpy(),
            "model_name": scored["model_name"].array.take(first),
            "model_version": scored["model_version"].array.take(first),
        }
    )
    # The most frequent first contributor of each device's flagged rows (ties: alphabetical,
    # that is the lowest code of the sorted factorization).
    flagged = is_anomaly.to_numpy()
    feature_codes, features = pd.factorize(scored["top_feature_1"][is_anomaly], sort=True)
    pair = key[flagged] * len(features) + feature_codes
    pairs, counts = np.unique(pair, return_counts=True)
    pair_group, pair_feature = pairs // len(features), pairs % len(features)
    # Per group: highest count, then lowest feature code (pairs are sorted by group, then code).
    order = np.lexsort((pair_feature, -counts, pair_group))
    best = order[np.r_[True, pair_group[order][1:] != pair_group[order][:-1]]]
    top = np.full(len(groups), -1, dtype=np.int64)
    top[np.searchsorted(groups, pair_group[best])] = pair_feature[best]
    summary["top_feature"] = pd.Series(features).array.take(top, allow_fill=True)
    return summary.astype({"samples": "int64", "anomalies": "int64"})


def top_devices(scored: pd.DataFrame, limit: int = 10) -> pd.DataFrame:
    """Devices ranked by their worst severity, with how often they were flagged and why."""
    flagged = scored.loc[scored["is_anomaly"]]
    if flagged.empty:
        return pd.DataFrame(columns=["device_id", "cohort", "anomalies", "max_severity", "top_features"])
    worst = flagged.sort_values("severity", ascending=False).drop_duplicates("device_id")
    counts = flagged.groupby("device_id").size().rename("anomalies")
    table = worst.merge(counts, left_on="device_id", right_index=True)
    table["top_features"] = table[["top_feature_1", "top_feature_2", "top_feature_3"]].astype("str").agg(", ".join, axis=1)
    table = table.rename(columns={"severity": "max_severity"})
    return table[["device_id", "cohort", "anomalies", "max_severity", "top_features"]].head(limit).reset_index(drop=True)
