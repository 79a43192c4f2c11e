"""Feature codes in words, for people: ``net_rx_mb__dev_1h`` reads "network received (MB):
deviation from its 1-hour mean".

Codes are built by ``core.features`` (``{metric}__delta``, ``__dev_{window}``, ``__std_{window}``),
``core.cohorts`` (``__cohort_z``) and ``core.baselines`` (``__baseline_exceed``). Metrics of any
source get words from their name and unit suffix; the synthetic fleet's get hand-written ones.
"""

from __future__ import annotations

import re

import pandas as pd

KNOWN_METRICS = {
    "battery_level_pct": "battery level (%)",
    "battery_temp_c": "battery temperature (°C)",
    "cpu_util_pct": "CPU use (%)",
    "memory_used_pct": "memory used (%)",
    "storage_free_gb": "free storage (GB)",
    "wifi_rssi_dbm": "Wi-Fi signal (dBm)",
    "net_rx_mb": "network received (MB)",
    "net_tx_mb": "network sent (MB)",
    "app_crashes": "app crashes",
    "reboots": "reboots",
    "data_used_mb_today": "data used today (MB)",
}
TIME_FEATURES = {
    "hour_sin": "time of day (sine)",
    "hour_cos": "time of day (cosine)",
    "missing_metrics": "metrics missing from the sample",
    "gap_minutes": "minutes since the previous sample",
}
UNITS = {"pct": "%", "c": "°C", "mb": "MB", "gb": "GB", "kb": "kB", "dbm": "dBm", "ms": "ms", "s": "s", "mbps": "Mbps"}
_WINDOW = re.compile(r"^(dev|std)_(\d+)(min|h|d)$")
_WINDOW_WORDS = {"min": "minute", "h": "hour", "d": "day"}


def metric_words(metric: str) -> str:
    if metric in KNOWN_METRICS:
        return KNOWN_METRICS[metric]
    parts = metric.split("_")
    if len(parts) > 1 and parts[-1].lower() in UNITS:
        return f"{' '.join(parts[:-1])} ({UNITS[parts[-1].lower()]})"
    return metric.replace("_", " ")


def _suffix_words(suffix: str) -> str | None:
    inner, separator, own = suffix.rpartition("__")
    if separator and own == "own":  # the ensemble's device columns: against the device's own history
        words = _suffix_words(inner)
        return f"{words}, against the device's own history" if words else None
    if suffix.startswith("mean_") and _WINDOW.match("dev_" + suffix[len("mean_"):]):
        kind, size, unit = _WINDOW.match("dev_" + suffix[len("mean_"):]).groups()
        return f"{size}-{_WINDOW_WORDS[unit]} mean"
    if suffix == "delta":
        return "change since the previous sample"
    if suffix == "cohort_z":
        return "distance from its cohort's usual value at this hour (z-score)"
    if suffix == "baseline_exceed":
        return "beyond its cohort's normal band (p01-p99)"
    match = _WINDOW.match(suffix)
    if match:
        kind, size, unit = match.groups()
        span = f"{size}-{_WINDOW_WORDS[unit]}"
        return f"deviation from its {span} mean" if kind == "dev" else f"variability over {span}"
    return None


def describe_feature(code: str | None) -> str:
    """The feature in words; an unknown code is returned as it is."""
    if code is None or (isinstance(code, float) and code != code) or code == "":
        return ""
    code = str(code)
    if code in TIME_FEATURES:
        return TIME_FEATURES[code]
    if code.endswith("__own") and code[: -len("__own")] in TIME_FEATURES:
        return f"{TIME_FEATURES[code[: -len('__own')]]}, against the device's own history"
    metric, separator, suffix = code.partition("__")
    if not separator:
        return metric_words(metric) if metric in KNOWN_METRICS or "_" in metric else code
    words = _suffix_words(suffix)
    return f"{metric_words(metric)}: {words}" if words else code


def with_words(code: str | None) -> str:
    """``code (in words)``, for tables that keep the code next to its meaning."""
    words = describe_feature(code)
    if not code or not words or words == code:
        return "" if code is None else str(code)
    return f"{code} ({words})"


def label_features(frame: pd.DataFrame, columns: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """A copy of ``frame`` whose feature-code columns read ``code (in words)``."""
    out = frame.copy()
    for column in columns:
        if column in out:
            out[column] = out[column].map(lambda c: with_words(c) if isinstance(c, str) else c)
    return out
