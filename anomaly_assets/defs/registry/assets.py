"""model_promotion (the gate after every training run) and the manual promote / rollback jobs."""

import dataclasses

import dagster as dg
import pandas as pd

from anomaly_assets import audit
from anomaly_assets.core.audit import run_actor
from anomaly_assets.version import code_version
from anomaly_assets.core.detector import DetectorConfig
from anomaly_assets.core.promotion import GateConfig, evaluate_gate, shadow_score, unseen_rows
from anomaly_assets.core.training_window import in_device_sample
from anomaly_assets.defs.partitions import daily_partitions
from anomaly_assets.defs.training.assets import anomaly_detector
from anomaly_assets.defs.registry.champion import champion_observed, recorded_champion
from anomaly_assets.resources import MlflowModelRegistry, ResultsStore
from anomaly_assets.resources.parquet_io import DeviceChunks
from anomaly_assets.resources.registry_client import CHAMPION, PromotionRefused


class PromotionConfig(dg.Config):
    max_auc_pr_drop: float = GateConfig.max_auc_pr_drop
    max_event_f1_drop: float = GateConfig.max_event_f1_drop
    max_alert_increase: float = GateConfig.max_alert_increase
    max_alerts_per_1000_devices_per_day: float | None = GateConfig.max_alerts_per_1000_devices_per_day
    max_alert_rate: float = GateConfig.max_alert_rate
    max_score_psi: float = GateConfig.max_score_psi
    label_column: str = "is_injected_anomaly"
    # Devices whose unseen rows the two models are compared on (a uniform sample above it).
    evaluation_devices: int = DetectorConfig.evaluation_devices


@dg.asset(
    partitions_def=daily_partitions,
    group_name="training",
    kinds={"mlflow"},
    owners=["team:fleet-analytics"],
    code_version=code_version(),
    deps=[anomaly_detector],
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    description="Shadow-scores the challenger and the champion on the partition's rows neither was trained on and moves "
    "'champion' only when the gate passes; the decision and its reasons go to MLflow tags and metadata; a new (or "
    "first) champion is recorded as an observation of champion_model.",
)
def model_promotion(
    context: dg.AssetExecutionContext,
    config: PromotionConfig,
    device_features: DeviceChunks,
    model_registry: MlflowModelRegistry,
    results_store: ResultsStore,
) -> dg.MaterializeResult:
    # The version this partition's training registered (in this run, or the newest for the
    # partition), not the global 'challenger' alias another training run may have moved meanwhile.
    challenger_version = model_registry.partition_version(context.partition_key, run_id=context.run.run_id)
    champion_version = model_registry.alias_version(CHAMPION)
    if challenger_version is None:
        raise dg.Failure(
            description=f"{model_registry.model_name} has no version trained for partition {context.partition_key}: "
            "materialize anomaly_detector for it first"
        )
    if challenger_version == champion_version:
        # Typically the first trained version, champion on registration: recorded in the graph
        # before anything is scored with it.
        if recorded_champion(context.instance) != champion_version:
            history = model_registry.champion_history()
            change = history[-1] if history and history[-1]["version"] == champion_version else {"version": champion_version}
            context.log_event(champion_observed(model_registry, change))
        return dg.MaterializeResult(
            metadata={"decision": "no change", "reason": f"challenger version {challenger_version} is already champion",
                      "champion_version": champion_version}
        )
    challenger_model = model_registry.load_version(challenger_version)
    champion_model = model_registry.load_version(champion_version)
    # Compared on rows neither model was fitted on nor chose its threshold on: the challenger's
    # held-out day, when the champion was trained on an earlier window.
    # The partition's rows a chunk of devices at a time, of at most evaluation_devices devices
    # (a sample fixed by the device ids above it): memory follows the chunk, not the fleet.
    share = min(1.0, config.evaluation_devices / max(device_features.device_count(), 1))
    shadow = shadow_score(
        device_features,
        challenger_model,
        champion_model,
        lambda chunk: unseen_rows(chunk, challenger_model.training_summary, champion_model.training_summary)
        & in_device_sample(chunk["device_id"], share, seed=0),
        config.label_column,
    )
    if shadow.challenger.empty:
        reason = (
            f"no rows of partition {context.partition_key} are unseen by both challenger {challenger_version} and "
            f"champion {champion_version}: materialize a later partition's model_promotion to compare them"
        )
        model_registry.tag_version(
            challenger_version,
            {"promotion_decision": "refused", "promotion_reasons": reason, "promotion_compared_with": champion_version,
             "promotion_partition": context.partition_key},
        )
        return dg.MaterializeResult(
            metadata={"decision": "refused", "reasons": dg.MetadataValue.md(f"- fail: {reason}"),
                      "challenger_version": challenger_version, "champion_version": champion_version, "evaluated_rows": 0}
        )
    gate = GateConfig(**config.model_dump(exclude={"label_column", "evaluation_devices"}))
    decision = evaluate_gate(shadow.challenger, shadow.champion, shadow.labels, gate)
    model_registry.tag_version(
        challenger_version,
        {
            "promotion_decision": "passed" if decision.passed else "refused",
            "promotion_reasons": "; ".join(decision.reasons),
            "promotion_compared_with": champion_version,
            "promotion_partition": context.partition_key,
        },
    )
    if decision.passed:
        actor = run_actor(context.run.run_id, context.run.tags)
        entry = model_registry.set_champion(
            challenger_version, reason="; ".join(decision.reasons), actor=f"model_promotion run {context.run.run_id}"
        )
        audit.record_champion_change(results_store, actor, entry, action="champion.gate")
        context.log_event(champion_observed(model_registry, entry))
    table = pd.DataFrame({"challenger": decision.challenger, "champion": decision.champion}).round(4)
    return dg.MaterializeResult(
        metadata={
            "decision": "promoted" if decision.passed else "refused",
            "challenger_version": challenger_version,
            "previous_champion_version": champion_version,
            "champion_version": model_registry.alias_version(CHAMPION),
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
            "comparison": dg.MetadataValue.md(table.to_markdown()),
            "gate_config": dg.MetadataValue.json(dataclasses.asdict(gate)),
            "evaluated_rows": len(shadow.challenger),
            "evaluated_devices": int(shadow.challenger["device_id"].nunique()),
        }
    )


class PromoteConfig(dg.Config):
    version: str
    reason: str = "manual promotion"
    force: bool = False  # promote a version the gate refused


class RollbackConfig(dg.Config):
    reason: str = "manual rollback"


@dg.op
def promote_model(
    context: dg.OpExecutionContext, config: PromoteConfig, model_registry: MlflowModelRegistry, results_store: ResultsStore
) -> None:
    actor = run_actor(context.run_id, context.run.tags)
    try:
        entry = model_registry.promote(config.version, reason=config.reason, actor=actor.label(), force=config.force)
    except (LookupError, PromotionRefused) as error:  # a refused or unknown version: say so, no traceback
        raise dg.Failure(description=f"version {config.version} was not promoted: {error}") from None
    if entry is None:
        context.log.info(f"version {config.version} is champion already: nothing changed")
        return
    audit.record_champion_change(results_store, actor, entry)
    context.log.info(f"champion moved from version {entry['previous'] or '-'} to {entry['version']} (by {actor.who})")
    context.log_event(champion_observed(model_registry, entry))


@dg.op
def rollback_model(
    context: dg.OpExecutionContext, config: RollbackConfig, model_registry: MlflowModelRegistry, results_store: ResultsStore
) -> None:
    actor = run_actor(context.run_id, context.run.tags)
    try:
        entry = model_registry.rollback(reason=config.reason, actor=actor.label())
    except LookupError as error:
        raise dg.Failure(description=f"nothing to roll back: {error}") from None
    audit.record_champion_change(results_store, actor, entry)
    context.log.info(f"champion rolled back from version {entry['previous']} to {entry['version']} (by {actor.who})")
    context.log_event(champion_observed(model_registry, entry))


@dg.job(description="Point the 'champion' alias at a version (run config: version, reason, force for a version the gate refused).")
def promote_model_job():
    promote_model()


@dg.job(description="Move 'champion' back to the previous champion (run config: reason).")
def rollback_model_job():
    rollback_model()
