"""feature_drift: per-feature drift of a partition against the champion's training reference."""

import dagster as dg

from anomaly_assets.version import code_version
from anomaly_assets.core.drift import CurrentDistribution
from anomaly_assets.defs.registry.champion import CHAMPION_MODEL
from anomaly_assets.defs.partitions import daily_partitions, markdown_preview, partition_check_results
from anomaly_assets.resources import MlflowModelRegistry, ResultsStore
from anomaly_assets.resources.parquet_io import DeviceChunks
from anomaly_assets.resources.results_store import feature_drift_results

DRIFTED_FEATURE_COUNT = "drifted_feature_count"  # metadata key the drift sensor reads


class DriftConfig(dg.Config):
    psi_threshold: float = 0.2


@dg.asset(
    partitions_def=daily_partitions,
    group_name="monitoring",
    kinds={"pandas", "sql"},
    owners=["team:fleet-analytics"],
    code_version=code_version(),
    deps=[CHAMPION_MODEL],  # measured against the champion's training reference
    backfill_policy=dg.BackfillPolicy.single_run(),  # measures each day of the run separately
    check_specs=[
        dg.AssetCheckSpec(
            "no_feature_drift",
            asset="feature_drift",
            partitions_def=daily_partitions,  # a check's result names its partition in the UI
            description="No feature's PSI against the champion's training reference reaches the threshold.",
        )
    ],
    description="Per-feature PSI and KS statistic of the partition against the champion's training reference.",
)
def feature_drift(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    device_features: DeviceChunks,
    model_registry: MlflowModelRegistry,
    results_store: ResultsStore,
):
    version, model = model_registry.load_champion()
    if model.drift_reference is None:
        raise dg.Failure(description=f"champion version {version} was trained without a drift reference; retrain it")
    # One measurement per partition, also in a multi-day run, accumulated a chunk of devices at a time.
    current = {day: CurrentDistribution(model.drift_reference) for day in context.partition_keys}
    for chunk in device_features:
        if chunk.empty:
            continue
        days = chunk["timestamp"].dt.strftime("%Y-%m-%d")
        for day, distribution in current.items():
            rows = chunk.loc[days == day]
            if len(rows):
                distribution.add(model.monitoring_frame(rows))
    drifted_by_day: dict[str, list[str]] = {}
    for day, distribution in current.items():
        table = distribution.drift(psi_threshold=config.psi_threshold)
        results_store.replace_partitions(feature_drift_results, [day], table.assign(partition_date=day, model_version=version))
        drifted_by_day[day] = table.loc[table["drifted"], "feature"].tolist()
        metadata = {
            DRIFTED_FEATURE_COUNT: len(drifted_by_day[day]),
            "drifted_features": dg.MetadataValue.json(drifted_by_day[day]),
            "max_psi": float(table["psi"].max()),
            "psi_threshold": config.psi_threshold,
            "model_version": version,
            "most_drifted": markdown_preview(table.round(4), rows=10),
        }
        if len(context.partition_keys) > 1:
            context.add_asset_metadata(metadata, partition_key=day)
    yield dg.MaterializeResult(metadata=metadata if len(context.partition_keys) == 1 else {})
    yield from partition_check_results(
        context,
        {
            day: dg.AssetCheckResult(
                check_name="no_feature_drift",
                passed=not drifted,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"drifted_features": dg.MetadataValue.json(drifted)},
                description=f"{len(drifted)} drifted ({', '.join(drifted[:5])})" if drifted else None,
            )
            for day, drifted in drifted_by_day.items()
        },
    )
