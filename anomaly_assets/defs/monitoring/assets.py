"""feature_drift's run config, metadata and check: per-feature drift of a partition against the
champion's training reference. The asset itself is computed with scored_anomalies, from the
same reading of device_features (anomaly_assets/defs/scoring/assets.py), and materializes alone
too."""

import dagster as dg

from anomaly_assets.core.drift import CurrentDistribution
from anomaly_assets.defs.partitions import daily_partitions, markdown_preview, partition_check_results
from anomaly_assets.resources import ResultsStore
from anomaly_assets.resources.results_store import feature_drift_results

DRIFTED_FEATURE_COUNT = "drifted_feature_count"  # metadata key the drift sensor reads
FEATURE_DRIFT = dg.AssetKey("feature_drift")


class DriftConfig(dg.Config):
    psi_threshold: float = 0.2


FEATURE_DRIFT_CHECK = dg.AssetCheckSpec(
    "no_feature_drift",
    asset=FEATURE_DRIFT,
    partitions_def=daily_partitions,  # a check's result names its partition in the UI
    description="No feature's PSI against the champion's training reference reaches the threshold.",
)


def feature_drift_results_events(
    context: dg.AssetExecutionContext,
    current: dict[str, CurrentDistribution],
    psi_threshold: float,
    version: str,
    results_store: ResultsStore,
):
    """Each day's drift table into the results database; feature_drift's output with its metadata
    (the drift sensor reads DRIFTED_FEATURE_COUNT), then the no_feature_drift check per day."""
    drifted_by_day: dict[str, list[str]] = {}
    metadata: dict = {}
    for day, distribution in current.items():
        table = distribution.drift(psi_threshold=psi_threshold)
        results_store.replace_partitions(feature_drift_results, [day], table.assign(partition_date=day, model_version=version))
        drifted_by_day[day] = table.loc[table["drifted"], "feature"].tolist()
        metadata = {
            DRIFTED_FEATURE_COUNT: len(drifted_by_day[day]),
            "drifted_features": dg.MetadataValue.json(drifted_by_day[day]),
            "max_psi": float(table["psi"].max()) if len(table) else 0.0,
            "psi_threshold": psi_threshold,
            "model_version": version,
            "most_drifted": markdown_preview(table.round(4), rows=10),
        }
        if len(context.partition_keys) > 1:
            context.add_asset_metadata(metadata, asset_key=FEATURE_DRIFT, partition_key=day)
    yield dg.Output(None, output_name="feature_drift", metadata=metadata if len(context.partition_keys) == 1 else {})
    yield from partition_check_results(
        context,
        {
            day: dg.AssetCheckResult(
                asset_key=FEATURE_DRIFT,
                check_name="no_feature_drift",
                passed=not drifted,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"drifted_features": dg.MetadataValue.json(drifted)},
                description=f"{len(drifted)} drifted ({', '.join(drifted[:5])})" if drifted else None,
            )
            for day, drifted in drifted_by_day.items()
        },
    )

