"""The drift sensor: requests one retraining run when drift persists, then waits for a new model."""

import json

import dagster as dg

from anomaly_assets.core.drift import drift_streak_end
from anomaly_assets.defs.jobs import training_job
from anomaly_assets.defs.monitoring.assets import DRIFTED_FEATURE_COUNT
from anomaly_assets.defs.partitions import SETTINGS
from anomaly_assets.resources import MlflowModelRegistry

KEEP_PARTITIONS = 120  # recent partitions whose drift the cursor remembers (streaks are days long)


@dg.sensor(
    job=training_job,
    minimum_interval_seconds=SETTINGS.drift_sensor_interval_seconds,
    description=f"Requests training_job (train, register, gate) when at least {SETTINGS.drift_min_features} "
    f"features drift on {SETTINGS.drift_consecutive_partitions} consecutive partitions, then waits until "
    "a newer model version exists.",
)
def drift_retraining_sensor(context: dg.SensorEvaluationContext, model_registry: MlflowModelRegistry):
    cursor = json.loads(context.cursor) if context.cursor else {}
    waiting_after = cursor.get("waiting_for_version_after")
    if waiting_after is not None:
        latest = model_registry.latest_version()
        if latest is None or int(latest) <= int(waiting_after):
            return dg.SkipReason(
                f"cooldown: retraining for {cursor.get('requested_partition')} was requested; "
                f"waiting for a model version newer than {waiting_after}"
            )
        cursor = {
            "last_requested_partition": cursor.get("requested_partition"),
            **{k: cursor[k] for k in ("drifted", "events_cursor") if k in cursor},
        }

    # Only the measurements recorded since the last tick: the cursor keeps the event-log position
    # and each recent partition's latest count of drifted features.
    drifted: dict[str, int] = cursor.get("drifted", {})
    events_cursor = cursor.get("events_cursor")
    while True:
        page = context.instance.fetch_materializations(
            dg.AssetKey("feature_drift"), limit=500, cursor=events_cursor, ascending=True
        )
        for record in page.records:  # oldest first: a later measurement of a partition replaces it
            materialization = record.asset_materialization
            count = materialization.metadata.get(DRIFTED_FEATURE_COUNT) if materialization else None
            if materialization and materialization.partition and count is not None:
                drifted[materialization.partition] = int(count.value)
        events_cursor = page.cursor or events_cursor
        if not page.has_more:
            break
    drifted = dict(sorted(drifted.items())[-KEEP_PARTITIONS:])
    cursor = {**cursor, "drifted": drifted, "events_cursor": events_cursor}
    streak_end = drift_streak_end(drifted, SETTINGS.drift_min_features, SETTINGS.drift_consecutive_partitions)
    if streak_end is None:
        return dg.SensorResult(skip_reason="no persistent drift", cursor=json.dumps(cursor))
    if streak_end == cursor.get("last_requested_partition"):
        return dg.SensorResult(skip_reason=f"retraining for {streak_end} already done", cursor=json.dumps(cursor))
    current = model_registry.latest_version()
    cursor = {
        "requested_partition": streak_end,
        "waiting_for_version_after": int(current or 0),
        "drifted": drifted,
        "events_cursor": events_cursor,
    }
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"drift-retrain-{streak_end}",
                partition_key=streak_end,
                tags={"anomaly_assets/trigger": "feature_drift"},
            )
        ],
        cursor=json.dumps(cursor),
    )
