"""The graph's declared lineage as the Dagster UI shows and uses it, through a real
dagster-webserver's GraphQL (the queries its asset pages and backfill dialog send):

- scored partitions turn stale when another version becomes champion, naming ``champion_model``,
  fresh again once re-scored or once the version that scored them is champion again;
- a 5-day backfill of ``device_incidents`` (which depends on its own previous day) launched as the
  UI launches one, run by a real dagster-daemon, goes through the days in order, each day
  continuing the incidents the day before left open.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import dagster as dg
import pandas as pd

from anomaly_assets.definitions import build_definitions
from anomaly_assets.resources import ModelRegistryClient, ResultsStore, incident_store
from anomaly_assets.settings import Settings, prepare_embedded_home
from anomaly_assets_tests.dagster_processes import BIN, REPO, dagster_ui, home_environment
from anomaly_assets_tests.incident_helpers import device_rows, scored, write_scored_partitions

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SCORED_DAYS = ["2026-11-08", "2026-11-09"]  # the demo's 9 days: 7 to train the champion, then 2 scored

STALENESS = """
query Staleness($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      staleStatusByPartition(partitions: $partitions)
      staleCausesByPartition(partitions: $partitions) { key { path } category reason }
    }
  }
}"""
DATA_VERSION = """
query DataVersion($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode { dataVersion } } }"""


def _staleness(ui, asset: str, partitions: list[str]) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Each partition's stale status and its causes as (asset, reason), as the asset page shows them."""
    node = ui.graphql(STALENESS, {"key": {"path": [asset]}, "partitions": partitions})["assetNodeOrError"]
    return {
        partition: (status, [("/".join(c["key"]["path"]), c["reason"]) for c in causes])
        for partition, status, causes in zip(partitions, node["staleStatusByPartition"], node["staleCausesByPartition"])
    }


def _champion_data_version(ui) -> str:
    return ui.graphql(DATA_VERSION, {"key": {"path": ["champion_model"]}})["assetNodeOrError"]["dataVersion"]


def test_the_ui_shows_scored_partitions_stale_after_a_promotion(tmp_path):
    home = tmp_path / "home"
    env = home_environment(home, ANOMALY_ASSETS_FLEET_DEVICES="20", ANOMALY_ASSETS_FLEET_SEED="10")
    demo = subprocess.run(
        [str(BIN / "anomaly-assets"), "demo", "--devices", "20", "--days", "9", "--seed", "10", "--home", str(home), "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert demo.returncode == 0, f"demo failed:\n{demo.stdout[-3000:]}\n{demo.stderr[-3000:]}"
    assert json.loads(demo.stdout)["scored_days"] == SCORED_DAYS
    settings = Settings(home=home, fleet_devices=20, fleet_seed=10)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    registry = ModelRegistryClient(tracking_uri=settings.mlflow_tracking_uri)
    # Another version to promote: version 1's package registered again (the lineage is under test,
    # not the model; a trained one would take minutes).
    first = registry.client().get_model_version(registry.model_name, "1")
    second = str(registry.client().create_model_version(registry.model_name, source=first.source, run_id=first.run_id).version)
    fresh = ("FRESH", [])
    stale = ("STALE", [("champion_model", "has a new data version")])

    with dagster_ui(home, env, tmp_path) as ui:
        # The gate recorded the first champion, so the demo's scores name the version they used.
        assert _champion_data_version(ui) == "1"
        assert _staleness(ui, "scored_anomalies", SCORED_DAYS) == dict.fromkeys(SCORED_DAYS, fresh)

        promote = defs.resolve_job_def("promote_model_job").execute_in_process(
            instance=instance, run_config={"ops": {"promote_model": {"config": {"version": second, "reason": "lineage test"}}}}
        )
        assert promote.success and registry.alias_version("champion") == second
        assert _champion_data_version(ui) == second
        assert _staleness(ui, "scored_anomalies", SCORED_DAYS) == dict.fromkeys(SCORED_DAYS, stale)
        assert _staleness(ui, "feature_drift", SCORED_DAYS) == dict.fromkeys(SCORED_DAYS, stale)
        # Only what depends on the champion: the features those scores were made from are not stale.
        assert _staleness(ui, "device_features", SCORED_DAYS) == dict.fromkeys(SCORED_DAYS, fresh)

        rescore = defs.resolve_job_def("scoring_job").execute_in_process(
            instance=instance, partition_key=SCORED_DAYS[1], asset_selection=[dg.AssetKey("scored_anomalies")], run_config=QUIET
        )
        assert rescore.success
        rows = pd.read_parquet(settings.parquet_dir / "scored_anomalies" / f"{SCORED_DAYS[1]}.parquet")
        assert set(rows["model_version"]) == {second}
        assert _staleness(ui, "scored_anomalies", SCORED_DAYS) == {SCORED_DAYS[0]: stale, SCORED_DAYS[1]: fresh}

        # Back to version 1: the day it scored is fresh again, the day version 2 re-scored is stale.
        rollback = defs.resolve_job_def("rollback_model_job").execute_in_process(instance=instance)
        assert rollback.success and registry.alias_version("champion") == "1"
        assert _champion_data_version(ui) == "1"
        assert _staleness(ui, "scored_anomalies", SCORED_DAYS) == {SCORED_DAYS[0]: fresh, SCORED_DAYS[1]: stale}


BACKFILL_DAYS = ["2026-11-08", "2026-11-09", "2026-11-10", "2026-11-11", "2026-11-12"]
SAMPLES_PER_DAY = 288  # one every 5 minutes

LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
  }
}"""
BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill {
      status
      runs(limit: 20) { runId status tags { key value } }
      error { message }
    }
  }
}"""
DEPENDENCIES = """
query Dependencies($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode { dependencyKeys { path } } } }"""


def _flags(*spans: tuple[int, int]) -> str:
    """'1' for the samples in each [first, last) span of the 5 days, '0' elsewhere."""
    flags = ["0"] * (SAMPLES_PER_DAY * len(BACKFILL_DAYS))
    for first, last in spans:
        flags[first:last] = ["1"] * (last - first)
    return "".join(flags)


def _scored_fleet() -> pd.DataFrame:
    day = SAMPLES_PER_DAY
    return scored(
        # anomalous from 20:00 on the first day to 04:00 on the fifth: one incident across four midnights
        device_rows("dev-span", "Acme|X1|1", f"{BACKFILL_DAYS[0]} 00:00", _flags((day - 48, 4 * day + 48))),
        # two anomalous samples before the third midnight, one after: 3 of 6 only with the day before's window
        device_rows("dev-edge", "Acme|X1|1", f"{BACKFILL_DAYS[0]} 00:00", _flags((3 * day - 2, 3 * day + 1))),
        device_rows("dev-calm", "Acme|X2|1", f"{BACKFILL_DAYS[0]} 00:00", _flags()),
    )


def _wait_for_backfill(ui, backfill_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backfill = ui.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        if backfill["status"] not in ("REQUESTED", "CANCELING"):
            return backfill
        time.sleep(3)
    raise AssertionError(f"backfill {backfill_id} still {backfill['status']} after {timeout:.0f} s: {backfill}")


def test_a_five_day_backfill_of_device_incidents_runs_its_days_in_order(tmp_path):
    home = tmp_path / "home"
    settings = Settings(home=home)
    prepare_embedded_home(settings)
    assert write_scored_partitions(settings.parquet_dir, _scored_fleet()) == BACKFILL_DAYS
    env = home_environment(home)

    with dagster_ui(home, env, tmp_path, daemon=True) as ui:
        # The graph declares the self-dependency: the backfill can only order what it knows.
        dependencies = ui.graphql(DEPENDENCIES, {"key": {"path": ["device_incidents"]}})["assetNodeOrError"]["dependencyKeys"]
        assert {"/".join(k["path"]) for k in dependencies} == {"scored_anomalies", "device_incidents"}
        params = {"assetSelection": [{"path": ["device_incidents"]}], "partitionNames": BACKFILL_DAYS}
        launched = ui.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill = _wait_for_backfill(ui, launched["backfillId"])

    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    # The single-run backfill policy: one run over the range, in which the asset takes the days in order.
    [run] = backfill["runs"]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert run["status"] == "SUCCESS"
    assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == (
        BACKFILL_DAYS[0], BACKFILL_DAYS[-1],
    )  # fmt: skip

    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    records = instance.fetch_materializations(dg.AssetKey("device_incidents"), limit=20, ascending=True).records
    assert [r.asset_materialization.partition for r in records] == BACKFILL_DAYS  # each day after the one before
    assert {r.run_id for r in records} == {run["runId"]}
    metadata = [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in records]
    assert [m["previous_day_state"] for m in metadata[1:]] == ["loaded"] * 4
    assert [m["continued_from_previous_day"] for m in metadata] == [0, 1, 1, 1, 1]  # dev-span's incident
    assert [m["opened"] for m in metadata] == [1, 0, 0, 1, 0]  # dev-span's on day 1, dev-edge's on day 4

    incidents = incident_store.read_incidents(ResultsStore(url=settings.results_url)).set_index("device_id")
    assert sorted(incidents.index) == ["dev-edge", "dev-span"]
    span, edge = incidents.loc["dev-span"], incidents.loc["dev-edge"]
    # One incident, one id, from the first day to the fifth: each day continued the day before's state.
    assert (span["first_partition"], span["last_partition"], span["status"]) == (BACKFILL_DAYS[0], BACKFILL_DAYS[-1], "closed")
    assert span["started_at"] == pd.Timestamp(f"{BACKFILL_DAYS[0]} 20:00", tz="UTC")
    assert span["anomalous_samples"] == 48 + 3 * SAMPLES_PER_DAY + 48
    # The hysteresis window crossed the third midnight: opened on day 4 from day 3's last samples.
    assert edge["first_partition"] == BACKFILL_DAYS[3]
    assert edge["started_at"] == pd.Timestamp(f"{BACKFILL_DAYS[2]} 23:50", tz="UTC")
