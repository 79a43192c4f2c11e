"""MLflow registry lifecycle: tags and aliases, the promotion gate, manual promote and rollback,
pyfunc parity with scored_anomalies, reproducible re-scoring, registry failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.models import Model

from anomaly_assets.cli import main
from anomaly_assets.core.promotion import GateConfig, evaluate_gate
from anomaly_assets.definitions import build_definitions
from anomaly_assets.model_package import serving_columns
from anomaly_assets.resources.model_registry import MlflowModelRegistry
from anomaly_assets.resources.registry_client import RegistryError
from anomaly_assets_tests.conftest import free_port, small_settings, wait_http

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    saved = dict(os.environ)
    home = tmp_path_factory.mktemp("lifecycle") / "home"
    # MLflow's process-wide store: training, scoring and the registry must never read, set or write it.
    os.environ["MLFLOW_TRACKING_URI"] = _process_wide(home)  # the steps' processes too
    mlflow.set_tracking_uri(_process_wide(home))
    mlflow.set_registry_uri(_process_wide(home))  # an earlier test in this process may have set another
    assert main(["demo", "--devices", "30", "--days", "9", "--seed", "11", "--home", str(home), "--json"]) == 0
    yield home
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    os.environ.clear()
    os.environ.update(saved)


def _process_wide(home: Path) -> str:
    return f"sqlite:///{home.parent / 'process_wide.db'}"


@pytest.fixture(scope="module")
def defs(home):
    return build_definitions(small_settings(home))


@pytest.fixture(scope="module")
def registry(defs) -> MlflowModelRegistry:
    return defs.resources["model_registry"]


def _instance(home) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home / "dagster"))


def test_first_version_is_tagged_challenger_and_champion(registry):
    version = registry.client().get_model_version(registry.model_name, "1")
    assert version.tags["training_window"] == "2026-11-01..2026-11-07"
    assert version.tags["source_partitions"].split(",")[0] == "2026-11-01"
    assert len(version.tags["feature_spec_hash"]) == 16
    assert version.tags["dagster_run_id"]
    from anomaly_assets.version import code_version

    assert version.tags["code_version"] == code_version() and code_version().startswith("0.1.0")
    assert registry.alias_version("champion") == "1"
    assert registry.alias_version("challenger") == "1"


def test_pyfunc_champion_scores_raw_telemetry_exactly_like_scored_anomalies(home, registry):
    mlflow.set_tracking_uri(registry.tracking_uri)  # as a user would; the project never does
    mlflow.set_registry_uri(registry.tracking_uri)
    path = list(sys.path)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{registry.model_name}@champion")
    finally:  # MLflow puts the package's code first on sys.path: later tests' workers must not import it
        mlflow.set_tracking_uri(_process_wide(home))
        mlflow.set_registry_uri(_process_wide(home))
        sys.path[:] = path
    raw = pd.concat(
        [pd.read_parquet(home / "parquet" / "raw_telemetry" / f"{d}.parquet") for d in ("2026-11-07", "2026-11-08")],
        ignore_index=True,
    )
    predicted = model.predict(raw, params={"score_from": "2026-11-08"})  # day D-1 is lookback only
    scored = pd.read_parquet(home / "parquet" / "scored_anomalies" / "2026-11-08.parquet")
    assert len(predicted) == len(scored) > 0
    pd.testing.assert_series_equal(predicted["device_id"], scored["device_id"], check_dtype=False)
    # Equal up to the last bits: the reconstruction member's matrix product (BLAS) may round a
    # row differently with the batch it is in (a chunk of devices here, two days there).
    np.testing.assert_allclose(predicted["score"], scored["score"], rtol=1e-9, atol=1e-12)
    assert (predicted["is_anomaly"].to_numpy() == scored["is_anomaly"].to_numpy()).all()
    assert (predicted["top_feature_1"].to_numpy() == scored["top_feature_1"].to_numpy()).all()


def test_each_version_carries_a_signature_an_input_example_and_only_the_scoring_code(registry):
    client = registry.client()
    package = Path(client.get_model_version_download_uri(registry.model_name, "1").removeprefix("file://"))
    meta = Model.load(package)
    path = list(sys.path)
    spec = MlflowModelRegistry(tracking_uri=registry.tracking_uri).load_version("1").spec  # a fresh load
    assert sys.path == path  # the package's code folder stays out of the process's imports
    assert [c.name for c in meta.signature.inputs.inputs] == serving_columns(spec)
    assert {p.name for p in meta.signature.params.params} == {"score_from"}
    assert "score" in meta.signature.outputs.input_names()
    example = json.loads((package / meta.saved_input_example_info["serving_input_path"]).read_text())
    assert example["dataframe_split"]["columns"] == serving_columns(spec) and example["params"]["score_from"]
    code = {p.relative_to(package / "code" / "anomaly_assets").as_posix() for p in (package / "code").rglob("*.py")}
    assert {"model_package.py", "core/detector.py", "core/features.py"} <= code
    assert not {c for c in code if c.startswith(("defs/", "explorer/", "resources/")) or c in ("cli.py", "demo.py")}


def test_model_show_names_what_a_scoring_request_carries(home, registry, capsys, restore_environ):
    os.environ["ANOMALY_ASSETS_HOME"] = str(home)
    assert main(["model", "show", "--json"]) == 0  # the champion
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == "1" and "champion" in shown["aliases"] and shown["metrics"]["auc_pr"] == shown["auc_pr"]
    assert [c["name"] for c in shown["inputs"]] == serving_columns(registry.load_version("1").spec)
    assert [p["name"] for p in shown["params"]] == ["score_from"]
    assert main(["model", "show", "--version", "1"]) == 0
    assert "serve it: mlflow models serve -m models:/fleet_anomaly_detector/1" in capsys.readouterr().out
    assert main(["model", "show", "--version", "99"]) == 2
    assert "no version 99" in capsys.readouterr().err


def _latest_flagged_window(home: Path, spec, day: str) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """The latest window of the device flagged last on ``day``: its validated telemetry from the
    lookback before its last flagged row (less an hour) to the end of the day, the score_from, and
    the batch scores of those rows."""
    scored = pd.read_parquet(home / "parquet" / "scored_anomalies" / f"{day}.parquet")
    last_flag = scored.loc[scored["is_anomaly"]].sort_values("timestamp").iloc[-1]
    score_from = last_flag["timestamp"] - pd.Timedelta("1h")
    previous = (pd.Timestamp(day) - pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    telemetry = pd.concat(
        [pd.read_parquet(home / "parquet" / "validated_telemetry" / f"{d}.parquet") for d in (previous, day)],
        ignore_index=True,
    )
    rows = telemetry.loc[
        (telemetry["device_id"] == last_flag["device_id"]) & (telemetry["timestamp"] >= score_from - spec.lookback)
    ]
    batch = scored.loc[(scored["device_id"] == last_flag["device_id"]) & (scored["timestamp"] >= score_from)]
    return rows[serving_columns(spec)], score_from.isoformat(), batch.reset_index(drop=True)


def test_mlflow_models_serve_answers_with_the_batch_scores(home, registry, tmp_path):
    """MLflow's own scoring server, on the champion, scores a device's latest window as scored_anomalies did."""
    assert registry.alias_version("champion") == "1"  # the version that scored 2026-11-08
    rows, score_from, batch = _latest_flagged_window(home, registry.load_version("1").spec, "2026-11-08")
    assert batch["is_anomaly"].any() and len(batch) >= 12
    port, log = free_port(), tmp_path / "serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.tracking_uri, "MLFLOW_REGISTRY_URI": registry.tracking_uri,
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{registry.model_name}@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/ping", server, log, timeout=120)
        body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False, date_format="iso")),
                "params": {"score_from": score_from}}  # fmt: skip
        answer = requests.post(f"{url}/invocations", json=body, timeout=60)
        assert answer.status_code == 200, answer.text[:2000]
        served = pd.DataFrame(answer.json()["predictions"])
        assert served["device_id"].tolist() == batch["device_id"].tolist()
        assert (pd.to_datetime(served["timestamp"], utc=True) == batch["timestamp"]).all()
        np.testing.assert_allclose(served["score"], batch["score"], rtol=1e-9, atol=0)
        assert served["is_anomaly"].tolist() == batch["is_anomaly"].tolist()
        # The package's own input example is a valid request; a row without a metric is named.
        package = Path(registry.client().get_model_version_download_uri(registry.model_name, "1").removeprefix("file://"))
        example = (package / "serving_input_example.json").read_text()
        assert requests.post(f"{url}/invocations", data=example, headers={"Content-Type": "application/json"}, timeout=60).ok
        body["dataframe_split"]["columns"][-1] = "renamed"
        refused = requests.post(f"{url}/invocations", json=body, timeout=60)
        assert refused.status_code == 400 and "data_used_mb_today" in refused.json()["message"]
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker
        except ProcessLookupError:
            pass  # the group is gone already
        server.wait(timeout=30)


def test_rescoring_with_the_same_version_is_identical(home, defs):
    path = home / "parquet" / "scored_anomalies" / "2026-11-09.parquet"
    before = pd.read_parquet(path)
    result = defs.resolve_job_def("scoring_job").execute_in_process(
        instance=_instance(home), partition_key="2026-11-09", run_config=QUIET
    )
    assert result.success
    after = pd.read_parquet(path)
    pd.testing.assert_frame_equal(before, after)
    assert set(after["model_version"]) == {"1"}


def _materialize_promotion(defs, home, partition_key, config=None):
    run_config = dict(QUIET)
    if config:
        run_config["ops"] = {"model_promotion": {"config": config}}
    result = defs.resolve_job_def("training_job").execute_in_process(
        instance=_instance(home), partition_key=partition_key, run_config=run_config
    )
    assert result.success
    [event] = [
        e.materialization for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == dg.AssetKey("model_promotion")
    ]
    return {k: v.value for k, v in event.metadata.items()}


def test_gate_refuses_a_worse_challenger_and_records_why(home, defs, registry):
    # A challenger that may not flag more than 0.0001x the champion's alerts is refused.
    # Compared on a sample of 7 of the fleet's devices (fixed by their ids), a chunk at a time.
    decision = _materialize_promotion(defs, home, "2026-11-08", {"max_alert_increase": 0.0001, "evaluation_devices": 7})
    assert decision["decision"] == "refused"
    assert 0 < decision["evaluated_devices"] < 30 and decision["evaluated_rows"] > 0  # the demo's 30 devices
    assert "fail:" in decision["reasons"]
    assert registry.alias_version("champion") == "1"
    assert registry.alias_version("challenger") == "2"
    tags = registry.client().get_model_version(registry.model_name, "2").tags
    assert tags["promotion_decision"] == "refused"
    assert "exceeds" in tags["promotion_reasons"]


def test_gate_promotes_a_challenger_that_passes(home, defs, registry):
    lenient = {"max_alert_increase": 100.0, "max_auc_pr_drop": 1.0, "max_event_f1_drop": 1.0}
    decision = _materialize_promotion(defs, home, "2026-11-09", lenient)
    assert decision["decision"] == "promoted"
    assert registry.alias_version("champion") == "3"
    assert registry.champion_history()[-1]["version"] == "3"
    # The gate's run records the new champion in the graph at once (no sensor tick needed).
    [observed] = _instance(home).fetch_observations(dg.AssetKey("champion_model"), limit=1).records
    assert observed.asset_observation.tags["dagster/data_version"] == "3"
    assert observed.asset_observation.metadata["previous_champion_version"].value == "1"
    run = _instance(home).get_run_by_id(observed.run_id)
    assert run.job_name == "training_job" and run.tags["dagster/partition"] == "2026-11-09"


def test_manual_promote_and_rollback_from_the_cli(home, registry, capsys, restore_environ):
    os.environ["ANOMALY_ASSETS_HOME"] = str(home)
    assert main(["model", "promote", "--version", "2"]) == 2  # the gate refused version 2
    assert "--force" in capsys.readouterr().err
    assert main(["model", "promote", "--version", "2", "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "2"
    assert registry.alias_version("champion") == "2"
    assert main(["model", "rollback", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) | {"version": "3", "previous": "2"} == json.loads(
        json.dumps(registry.champion_history()[-1])
    )
    assert registry.alias_version("champion") == "3"
    assert main(["model", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in listing["versions"]] == ["1", "2", "3"]
    assert "champion" in listing["versions"][2]["aliases"]
    assert main(["model", "promote", "--version", "99"]) == 2
    assert "no version 99" in capsys.readouterr().err


def test_rollback_and_promote_jobs_run_from_dagster(home, defs, registry):
    promote = defs.resolve_job_def("promote_model_job").execute_in_process(
        instance=_instance(home),
        run_config={"ops": {"promote_model": {"config": {"version": "1", "reason": "test"}}}},
    )
    assert promote.success and registry.alias_version("champion") == "1"
    rollback = defs.resolve_job_def("rollback_model_job").execute_in_process(instance=_instance(home))
    assert rollback.success and registry.alias_version("champion") == "3"


def test_failed_alias_step_leaves_no_version_behind(home, registry, monkeypatch):
    from anomaly_assets.core.detector import FleetAnomalyModel  # noqa: F401  (model comes from the registry)

    model = registry.load_version("1")
    rows = pd.read_parquet(home / "parquet" / "validated_telemetry" / "2026-11-08.parquet")
    before = {v["version"] for v in registry.list_versions()}

    def broken(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("registry went away")

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", broken)
    with pytest.raises(RegistryError, match="was deleted"):
        registry.register(model, params={}, metrics={}, tags={"t": "1"}, tables={}, run_name="broken", example_rows=rows)
    monkeypatch.undo()
    assert {v["version"] for v in registry.list_versions()} == before


def test_unreachable_tracking_server_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    registry = MlflowModelRegistry(tracking_uri="http://127.0.0.1:9")
    with pytest.raises(RegistryError, match="127.0.0.1:9"):
        registry.register(None, params={}, metrics={}, tags={}, tables={}, run_name="x", example_rows=pd.DataFrame())


def test_gate_logic_without_labels_checks_alert_rate_and_stability():
    rows = pd.DataFrame(
        {"device_id": np.repeat(["a", "b"], 50), "timestamp": pd.date_range("2026-11-01", periods=100, freq="5min", tz="UTC")}
    )
    rng = np.random.default_rng(0)
    champion = rows.assign(score=rng.uniform(0.3, 0.5, 100), is_anomaly=False)
    champion.loc[::25, "is_anomaly"] = True
    similar = champion.assign(score=champion["score"] + rng.normal(0, 0.001, 100))
    assert evaluate_gate(similar, champion, labels=None).passed
    shifted = champion.assign(score=champion["score"] + 0.3)
    decision = evaluate_gate(shifted, champion, labels=None, config=GateConfig())
    assert not decision.passed and any("PSI" in r for r in decision.reasons if r.startswith("fail"))
    noisy = champion.assign(is_anomaly=True)
    assert not evaluate_gate(noisy, champion, labels=None).passed


def test_training_and_scoring_runs_carry_pictures_and_links(home, registry):
    client = registry.client()
    run_id = client.get_model_version(registry.model_name, "1").run_id
    figures = {a.path for a in client.list_artifacts(run_id, "figures")}
    assert figures >= {"figures/score_distribution.png", "figures/feature_contributions.png", "figures/roc_pr_curves.png"}
    assert client.get_run(run_id).data.tags["dagster_run_url"].startswith("http")
    scoring = client.get_experiment_by_name(f"{registry.experiment_name}_scoring")
    runs = client.search_runs([scoring.experiment_id], filter_string="tags.partition = '2026-11-08'")
    assert runs and {a.path for a in client.list_artifacts(runs[0].info.run_id, "figures")} == {
        "figures/anomalies_over_time.png"
    }
    instance = _instance(home)
    event = instance.get_latest_materialization_event(dg.AssetKey("scored_anomalies"))
    assert event.asset_materialization.metadata["mlflow_run"].value.startswith("http://127.0.0.1:5000/#/experiments/")


def test_a_champion_change_marks_scored_partitions_stale(home, defs, registry):
    """champion_model (observed by its sensor, or by the promote/rollback jobs) is upstream of
    scored_anomalies: a partition scored by one champion turns stale when another takes over, and
    is fresh again once re-scored."""
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    from anomaly_assets.defs.registry.champion import champion_observation_sensor

    instance = _instance(home)
    graph = defs.resolve_asset_graph()
    scored, day = dg.AssetKey("scored_anomalies"), "2026-11-09"

    def observe(cursor):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"model_registry": registry})
        result = champion_observation_sensor(context)
        for event in result.asset_events:  # what the daemon stores for the sensor
            instance.report_runless_asset_event(event)
        return result

    def status():
        resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
        return resolver.get_status(scored, day), resolver.get_stale_root_causes(scored, day)

    if len(registry.list_versions()) < 2:  # another version to promote (the gate tests make some too)
        training = defs.resolve_job_def("training_job")
        assert training.execute_in_process(instance=instance, partition_key="2026-11-08", run_config=QUIET).success
    first = observe(None)
    [observation] = first.asset_events
    assert observation.tags["dagster/data_version"] == registry.alias_version("champion") == first.cursor
    assert not observe(first.cursor).asset_events  # unchanged alias: nothing recorded
    job = defs.resolve_job_def("scoring_job")
    assert job.execute_in_process(instance=instance, partition_key=day, asset_selection=[scored], run_config=QUIET).success
    assert status()[0] == StaleStatus.FRESH

    previous = first.cursor
    other = next(v["version"] for v in registry.list_versions() if v["version"] != previous)
    registry.promote(other, reason="staleness test", actor="test", force=True)
    try:
        changed = observe(first.cursor)
        assert changed.cursor == other and changed.asset_events[0].metadata["previous_champion_version"].value == previous
        state, causes = status()
        assert state == StaleStatus.STALE
        assert any("champion_model" in str(cause) for cause in causes), causes
        assert job.execute_in_process(instance=instance, partition_key=day, asset_selection=[scored], run_config=QUIET).success
        assert status()[0] == StaleStatus.FRESH
    finally:
        registry.promote(previous, reason="restore after the staleness test", actor="test", force=True)


def test_the_gate_judges_the_version_its_own_partition_trained(home, defs, registry):
    """Two training partitions interleaved (as two concurrent runs): the later one moves the
    global 'challenger' alias, yet each partition's gate compares the version that partition
    registered; re-training a partition registers a new version linked to it by tag."""
    instance = _instance(home)
    fit = [dg.AssetKey(k) for k in ("cohort_stats", "baselines", "anomaly_detector")]
    training = defs.resolve_job_def("training_job")

    def train(day: str) -> str:
        result = training.execute_in_process(instance=instance, partition_key=day, asset_selection=fit, run_config=QUIET)
        assert result.success
        [event] = [e for e in result.get_asset_materialization_events() if e.materialization.asset_key == fit[-1]]
        return str(event.materialization.metadata["model_version"].value)

    first, second = train("2026-11-08"), train("2026-11-09")
    assert registry.alias_version("challenger") == second != first
    for day, version in (("2026-11-08", first), ("2026-11-09", second)):
        assert registry.client().get_model_version(registry.model_name, version).tags["dagster_partition"] == day
        result = training.execute_in_process(
            instance=instance, partition_key=day, asset_selection=[dg.AssetKey("model_promotion")], run_config=QUIET
        )
        assert result.success
        [event] = result.get_asset_materialization_events()
        assert event.materialization.metadata["challenger_version"].value == version
    again = train("2026-11-08")  # re-materialized: a new version, linked to the partition
    assert int(again) > int(second) and registry.partition_version("2026-11-08") == again


_TRAIN_ONE_PARTITION = """
import json, sys
import dagster as dg
from anomaly_assets.definitions import build_definitions
from anomaly_assets.settings import Settings, export_to_environment
from anomaly_assets_tests.conftest import small_settings
from pathlib import Path
settings = small_settings(Path(sys.argv[1]))
export_to_environment(settings)
defs = build_definitions(settings)
result = defs.resolve_job_def("training_job").execute_in_process(
    instance=dg.DagsterInstance.from_config(str(settings.dagster_home)), partition_key=sys.argv[2],
    run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
)
found = {e.materialization.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
         for e in result.get_asset_materialization_events()}
print(json.dumps({"success": result.success, "run_id": result.run_id,
                  "registered": str(found["anomaly_detector"]["model_version"]),
                  "gated": str(found["model_promotion"].get("challenger_version", found["model_promotion"].get("champion_version")))}))
"""


def test_two_training_runs_at_once_each_gate_their_own_version(home, registry):
    """Two training_job runs, for two partitions, in two processes at the same time: each gate
    evaluates the version its own run registered, whichever run moved 'challenger' last."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    days = ("2026-11-08", "2026-11-09")
    runs = [
        subprocess.Popen([sys.executable, "-c", _TRAIN_ONE_PARTITION, str(home), day], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for day in days
    ]
    outputs = []
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert all(o["success"] for o in outputs)
    assert outputs[0]["registered"] != outputs[1]["registered"]
    for day, out in zip(days, outputs, strict=True):
        assert out["gated"] == out["registered"]  # its own version, not the other run's
        tags = registry.client().get_model_version(registry.model_name, out["registered"]).tags
        assert tags["dagster_partition"] == day and tags["dagster_run_id"] == out["run_id"]
    assert registry.alias_version("challenger") in {o["registered"] for o in outputs}


def test_nothing_reached_mlflows_process_wide_store(home):
    """Every registry call above went through a client built with the home's tracking URI."""
    uri = _process_wide(home)
    assert mlflow.get_tracking_uri() == uri and mlflow.get_registry_uri() == uri  # never set
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.search_registered_models() == [] and [e.name for e in client.search_experiments()] == ["Default"]
