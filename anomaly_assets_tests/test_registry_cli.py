"""The `model` commands and the registry jobs explain themselves: gate reasons in `model list`, a
refused version needs --force, promoting the champion changes nothing, a rollback with nothing to
roll back fails with a clear dagster.Failure, a demoted version loses its champion_since tag, every
champion change is one readable tag, and `model` commands import neither scikit-learn nor the
source drivers. Versions are registered without training (an empty artifact folder each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pytest

from anomaly_assets.cli import main
from anomaly_assets.defs.registry.assets import promote_model_job, rollback_model_job
from anomaly_assets.resources.model_registry import MlflowModelRegistry
from anomaly_assets.resources.registry_client import CHAMPION_CHANGE_TAG, ModelRegistryClient
from anomaly_assets.settings import Settings
from anomaly_assets_tests.conftest import registry_with_three_versions


@pytest.fixture
def registry(tmp_path, restore_environ) -> MlflowModelRegistry:
    registry, _ = registry_with_three_versions(tmp_path)
    registry.tag_version("2", {"promotion_decision": "refused", "promotion_reasons": "fail: alerts per day 40.0 exceeds 2x the champion's 10.0; pass: auc_pr",
                               "promotion_compared_with": "1", "promotion_partition": "2026-11-08"})  # fmt: skip
    registry.tag_version("3", {"promotion_decision": "passed", "promotion_reasons": "pass: all", "promotion_compared_with": "1"})
    return registry


def test_model_list_shows_the_gate_reasons(registry, capsys):
    assert main(["model", "list"]) == 0
    out = capsys.readouterr().out
    assert "gate=refused" in out
    assert "gate against version 1: fail: alerts per day 40.0 exceeds 2x the champion's 10.0" in out
    assert "champion history" in out and "first trained version" in out
    assert main(["model", "list", "--json"]) == 0
    versions = {v["version"]: v for v in json.loads(capsys.readouterr().out)["versions"]}
    assert versions["2"]["gate_reasons"].startswith("fail: alerts per day")
    assert versions["1"]["champion_since"]


def test_a_refused_version_needs_force_and_the_refusal_says_why(registry, capsys):
    assert main(["model", "promote", "--version", "2"]) == 2
    err = capsys.readouterr().err
    assert "the promotion gate refused version 2" in err and "exceeds 2x" in err and "--force" in err
    assert registry.alias_version("champion") == "1"
    assert main(["model", "promote", "--version", "2", "--force", "--reason", "incident 42"]) == 0
    assert capsys.readouterr().out.strip() == "champion: version 1 -> 2"
    assert registry.alias_version("champion") == "2"
    assert registry.champion_history()[-1]["reason"] == "incident 42 (forced past the gate's refusal)"


def test_promoting_the_champion_is_a_no_op_that_says_so(registry, capsys):
    history = registry.champion_history()
    assert main(["model", "promote", "--version", "1"]) == 0
    assert capsys.readouterr().out.strip() == "version 1 is champion already: nothing changed"
    assert registry.champion_history() == history


def test_rollback_removes_the_demoted_versions_champion_since_and_tags_each_change(registry, capsys, monkeypatch):
    monkeypatch.setenv("ANOMALY_ASSETS_ACTOR", "ops-oncall")
    assert main(["model", "promote", "--version", "3"]) == 0
    client = registry.client()
    assert "champion_since" not in client.get_model_version(registry.model_name, "1").tags
    assert main(["model", "rollback"]) == 0
    assert capsys.readouterr().out.strip().endswith("champion rolled back: version 3 -> 1")
    assert "champion_since" not in client.get_model_version(registry.model_name, "3").tags
    assert client.get_model_version(registry.model_name, "1").tags["champion_since"]
    tags = client.get_registered_model(registry.model_name).tags
    changes = [tags[k] for k in sorted(tags) if k.startswith(CHAMPION_CHANGE_TAG)]
    assert len(changes) == 3
    assert "promote version - -> 1 by test: first trained version" in changes[0]
    assert "rollback version 3 -> 1 by ops-oncall (cli): manual rollback" in changes[2]


def test_registry_jobs_fail_with_a_clear_description(registry):
    from anomaly_assets.resources.results_store import ResultsStore

    resources = {"model_registry": registry, "results_store": ResultsStore(url=Settings.from_env().results_url)}
    rollback = rollback_model_job.execute_in_process(resources=resources, raise_on_error=False)
    assert not rollback.success
    failure = rollback.failure_data_for_node("rollback_model")
    assert failure.error.cls_name == "Failure"  # the UI shows its description, not a Python error
    assert failure.user_failure_data.description.startswith("nothing to roll back: fleet_anomaly_detector has no previous")
    refused = promote_model_job.execute_in_process(
        resources=resources, raise_on_error=False,
        run_config={"ops": {"promote_model": {"config": {"version": "2"}}}},
    )  # fmt: skip
    error = refused.failure_data_for_node("promote_model")
    assert error.error.cls_name == "Failure"
    assert "the promotion gate refused version 2" in error.user_failure_data.description
    forced = promote_model_job.execute_in_process(
        resources=resources, run_config={"ops": {"promote_model": {"config": {"version": "2", "force": True}}}}
    )
    assert forced.success and registry.alias_version("champion") == "2"


def test_experiments_open_in_the_classic_runs_view(registry):
    client = registry.client()
    registry.log_scoring_run("2026-11-08", "1", metrics={"rows": 1.0}, figures={}, tags={})
    experiment = client.get_experiment_by_name(f"{registry.experiment_name}_scoring")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_model_commands_load_neither_dagster_nor_scikit_learn_nor_source_drivers(registry):
    """What makes `model` commands quick: the MLflow client (and, for a champion change, the audit
    trail's SQLAlchemy tables) and nothing of Dagster, scikit-learn or the drivers."""
    heavy = ("dagster", "sklearn", "numba", "great_expectations", "pyodbc", "anomaly_assets.resources.sources")
    commands = [["model", "list"], ["model", "show", "--version", "3"], ["model", "promote", "--version", "3"], ["model", "rollback"]]
    probe = (
        f"import sys; from anomaly_assets.cli import main; codes = [main(c) for c in {commands!r}]; "
        f"print(codes, sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=os.environ, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "version   2" in result.stdout and "champion: version 1 -> 3" in result.stdout
    # show fails (these versions have no package), the others succeed; nothing heavy was imported.
    assert result.stdout.strip().splitlines()[-1] == "[0, 2, 0, 0] []"


def test_two_registries_in_one_process_do_not_interfere(registry, tmp_path, monkeypatch):
    """Each registry builds its client with its own tracking URI: none reads or moves MLflow's
    process-wide URI, which here points at a third store that must stay empty."""
    monkeypatch.chdir(tmp_path)  # MLflow's default store would be ./mlflow.db
    decoy = f"sqlite:///{tmp_path / 'decoy.db'}"
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # MLflow exports what it is set to
        monkeypatch.setenv(variable, decoy)
    mlflow.set_tracking_uri(decoy)
    mlflow.set_registry_uri(decoy)
    try:
        other = ModelRegistryClient(tracking_uri=f"sqlite:///{tmp_path / 'other.db'}", artifact_location=(tmp_path / "other").as_uri())
        other.client().create_registered_model(other.model_name)
        source = tmp_path / "other-model"
        source.mkdir()
        other.client().create_model_version(other.model_name, source=str(source))
        # Interleaved: a champion change and a scoring run in each.
        other.set_champion("1", reason="first", actor="test")
        registry.set_champion("3", reason="gate passed", actor="test")
        other.log_scoring_run("2026-11-09", "1", metrics={"rows": 2.0}, figures={}, tags={})
        registry.log_scoring_run("2026-11-08", "3", metrics={"rows": 1.0}, figures={}, tags={})
        assert [v["version"] for v in registry.list_versions()] == ["1", "2", "3"]
        assert [v["version"] for v in other.list_versions()] == ["1"]
        assert (registry.alias_version("champion"), other.alias_version("champion")) == ("3", "1")
        assert [e["version"] for e in other.champion_history()] == ["1"]
        assert [e["version"] for e in registry.champion_history()] == ["1", "3"]
        runs = {
            r.alias_version("champion"): [run.data.tags["partition"] for run in r.client().search_runs(
                [r.client().get_experiment_by_name(f"{r.experiment_name}_scoring").experiment_id])]
            for r in (registry, other)
        }  # fmt: skip
        assert runs == {"3": ["2026-11-08"], "1": ["2026-11-09"]}
        assert mlflow.get_tracking_uri() == decoy and mlflow.get_registry_uri() == decoy
        decoy_client = mlflow.MlflowClient(tracking_uri=decoy, registry_uri=decoy)
        assert decoy_client.search_registered_models() == []
        assert [e.name for e in decoy_client.search_experiments()] == ["Default"]
        assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
