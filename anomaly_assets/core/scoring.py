"""Summaries of scored rows: per device and day, and the most anomalous devices."""

from __future__ import annotations

import pandas as pd


def daily_device_summary(scored: pd.DataFrame) -> pd.DataFrame:
    """One row per (partition_date, device_id): samples, anomalies, worst severity, main feature."""
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
