"""The code location loads: every asset, check, job and resource resolves."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from anomaly_assets.definitions import build_definitions
from anomaly_assets_tests.conftest import small_settings


def test_definitions_load(tmp_path):
    defs = build_definitions(small_settings(tmp_path / "home"))
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {
        "raw_telemetry",
        "validated_telemetry",
        "device_features",
        "cohort_stats",
        "baselines",
        "anomaly_detector",
        "model_promotion",
        "scored_anomalies",
        "feature_drift",
        "device_incidents",
        "alert_deliveries",
        "device_inventory",
        "champion_model",
    }
    for job in ("telemetry_job", "training_job", "scoring_job", "promote_model_job", "rollback_model_job"):
        assert defs.resolve_job_def(job) is not None
    assert set(defs.resources) >= {"telemetry_source", "results_store", "model_registry", "io_manager"}
    assert {s.name for s in defs.schedules} >= {"daily_scoring_schedule", "weekly_retraining_schedule"}
    assert {s.name for s in defs.sensors} >= {"drift_retraining_sensor"}
    assert dg.AssetCheckKey(dg.AssetKey("validated_telemetry"), "bad_row_share_within_limit") in graph.asset_check_keys
    # One retry layer per failure kind: no step retries training (MLflow's client retries its own
    # requests, bounded); the instance re-runs a run only when the run itself died, not a step.
    assert all(node.assets_def.op.retry_policy is None for node in graph.asset_nodes if node.is_materializable)
    run_retries = yaml.safe_load((Path(__file__).parents[1] / "deploy" / "dagster.yaml").read_text())["run_retries"]
    assert run_retries["enabled"] and run_retries["retry_on_asset_or_op_failure"] is False
    # groups per layer
    groups = {graph.get(dg.AssetKey(k)).group_name for k in keys}
    # lineage the code really has: the model scoring uses, the day incidents continue from
    assert dg.AssetKey("champion_model") in graph.get(dg.AssetKey("scored_anomalies")).parent_keys
    assert dg.AssetKey("champion_model") in graph.get(dg.AssetKey("feature_drift")).parent_keys
    assert dg.AssetKey("device_incidents") in graph.get(dg.AssetKey("device_incidents")).parent_keys
    # the inventory's cohort attributes are joined by validation; raw_telemetry stays as delivered
    assert graph.get(dg.AssetKey("validated_telemetry")).parent_keys == {dg.AssetKey("raw_telemetry"), dg.AssetKey("device_inventory")}
    assert not graph.get(dg.AssetKey("raw_telemetry")).parent_keys
    assert {"device_inventory", "raw_telemetry"} <= {k.to_user_string() for k in defs.resolve_job_def("scoring_job").asset_layer.executable_asset_keys}
    # honest code versions: the package version and, in a checkout, the commit
    from anomaly_assets.version import code_version

    assert graph.get(dg.AssetKey("scored_anomalies")).code_version == code_version()
    assert groups >= {"ingestion", "features", "training", "scoring", "monitoring", "alerting"}


def test_module_level_defs_load():
    from anomaly_assets import definitions

    assert isinstance(definitions.defs, dg.Definitions)
    definitions.defs.resolve_all_job_defs()
