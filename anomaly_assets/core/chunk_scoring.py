"""One chunk of whole devices scored, and its share of the partition's drift, from one reading of
its features: what the scoring step (scored_anomalies and feature_drift) runs per chunk, in a
worker process or its own."""

from __future__ import annotations

import dataclasses

import pandas as pd

from anomaly_assets.core.drift import CurrentDistribution
from anomaly_assets.core.model import FleetAnomalyModel
from anomaly_assets.core.scoring import daily_device_summary, top_devices


@dataclasses.dataclass
class ScoredChunk:
    """A chunk's scored rows per partition day, and the small figures the step adds up."""

    scored: dict[str, pd.DataFrame]  # day: every scored row (empty when scores are not wanted)
    events: pd.DataFrame  # the flagged rows
    summary: pd.DataFrame  # daily_device_summary
    hourly: pd.DataFrame  # rows and flagged rows per (hour, cohort), with partition_date
    flagged: dict[str, int]
    flagged_devices: dict[str, int]
    worst: dict[str, pd.DataFrame]  # day: the chunk's worst devices
    drift: dict[str, CurrentDistribution]  # day: the chunk's share of the drift measurement


def day_strings(timestamps: pd.Series) -> pd.Series:
    """Each row's UTC day as ``%Y-%m-%d``: formatted once per distinct day, not per row."""
    codes, days = pd.factorize(timestamps.dt.floor("D"))
    return pd.Series(pd.Index(days.strftime("%Y-%m-%d")).take(codes), index=timestamps.index)


def score_chunk(
    model: FleetAnomalyModel,
    features: pd.DataFrame,
    days: list[str],
    *,
    model_name: str,
    model_version: str,
    score: bool = True,
    drift: bool = True,
    top: int = 10,
    drift_seed: int = 0,
    keep_below: dict[str, float] | None = None,
) -> ScoredChunk:
    """Score ``features`` (whole devices) and/or measure its drift, per day of ``days``.
    ``keep_below``: each day's bound on the drift sample's priorities (``drift.keep_below`` of the
    day's rows), so a chunk sends only the sample rows that can matter."""
    out = ScoredChunk({}, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), dict.fromkeys(days, 0), dict.fromkeys(days, 0), {}, {})
    if features.empty:
        return out
    cohorts = model.cohorts(features)
    row_days = day_strings(features["timestamp"])
    if drift:
        if model.drift_reference is None:
            raise ValueError("the model was trained without a drift reference")
        columns = model.monitored_columns
        values = model.monitoring_values(features, cohorts)
        order = [columns.index(f) for f in model.drift_reference.features]
        reference_values = values if order == list(range(len(columns))) else values[:, order]
        for day in days:
            mask = (row_days == day).to_numpy()
            if mask.any():
                bound = (keep_below or {}).get(day, 1.0)
                out.drift[day] = CurrentDistribution(model.drift_reference, seed=drift_seed, keep_below=bound)
                out.drift[day].add_values(reference_values if mask.all() else reference_values[mask])
        del values, reference_values
    if not score:
        return out
    from anomaly_assets import reports  # matplotlib: only where scores are summarized

    inputs = model.model_inputs(features, cohorts)
    scored = model.score_from(features, inputs, model.raw_scores(inputs), cohorts)
    scored = scored.assign(model_name=model_name, model_version=model_version, partition_date=row_days.to_numpy())
    events = scored.loc[scored["is_anomaly"]]
    for day, day_events in events.groupby("partition_date"):
        # A device lies in one chunk, so per-chunk counts add up and the fleet's worst devices are
        # among the chunks' own worst.
        out.flagged[day] += len(day_events)
        out.flagged_devices[day] += day_events["device_id"].nunique()
        out.worst[day] = top_devices(day_events, top)
    out.events = events.reset_index(drop=True)
    out.summary = daily_device_summary(scored)
    out.hourly = reports.flagged_per_hour(scored).assign(partition_date=lambda f: day_strings(f["bucket"]).to_numpy())
    if len(days) == 1:
        out.scored = {days[0]: scored}
    else:
        out.scored = {day: scored.loc[(row_days == day).to_numpy()] for day in days if (row_days == day).any()}
    return out
