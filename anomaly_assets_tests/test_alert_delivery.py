"""Alert delivery against real local servers: an HTTP server on 127.0.0.1 for the webhook and Slack
channels, aiosmtpd on 127.0.0.1 for email; failures and retries, the rate-limit digest, and
idempotent re-runs through the alert_deliveries asset."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import socket
import threading
from collections import Counter

import pandas as pd
import pytest

from anomaly_assets.core.alerts import ChannelConfigError, load_channels, parse_channels
from anomaly_assets.defs.alerting.assets import device_incidents
from anomaly_assets.resources import ResultsStore, incident_store
from anomaly_assets.resources.incident_store import DeliveryLog
from anomaly_assets.resources.alert_router import AlertRouter
from anomaly_assets_tests.conftest import require_service
from anomaly_assets_tests.incident_helpers import AlertingHarness, device_rows, http_server, scored, write_scored_partitions  # noqa: F401 (a fixture)

UI = "http://dagster.test:3000"
LINK = f"{UI}/assets/device_incidents"


class _Sink:
    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's naming)
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def smtp_server():
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        require_service(False, "aiosmtpd is not installed (pip install -e '.[dev]')")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = _Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    sink.port = port
    yield sink
    controller.stop()


def _channels_file(tmp_path, channels: list[dict]):
    path = tmp_path / "channels.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"channels": channels}))
    return str(path)


def _fleet(day: str = "2026-11-08") -> pd.DataFrame:
    """dev-a: critical; dev-b: medium; cohort X1: 4 of 5 devices together (one cohort incident)."""
    frames = [
        device_rows("dev-a", "Acme|A|1", f"{day} 08:00", "0011111000000000", severity=95),
        device_rows("dev-b", "Acme|B|1", f"{day} 09:00", "0011111000000000", severity=68),
    ]
    frames += [device_rows(f"x1-{i}", "Acme|X1|1", f"{day} 10:00", "1" * 24, severity=70 + 5 * i) for i in range(4)]
    frames.append(device_rows("x1-4", "Acme|X1|1", f"{day} 10:00", "0" * 24))
    return scored(*frames)


def _log(harness: AlertingHarness, channel: str) -> pd.DataFrame:
    return incident_store.read_log(harness.store, channel)


def test_webhook_slack_and_email_each_get_every_incident_once(tmp_path, http_server, smtp_server, monkeypatch):
    monkeypatch.setenv("TEST_SLACK_WEBHOOK_URL", http_server.url("/slack/T000/B000/secret"))
    channels = _channels_file(
        tmp_path,
        [
            {"name": "ops-webhook", "type": "webhook", "url": http_server.url("/hook"), "headers": {"X-Team": "fleet"}},
            {"name": "fleet-slack", "type": "slack", "url_env": "TEST_SLACK_WEBHOOK_URL", "min_severity": "high"},
            {
                "name": "oncall-mail", "type": "email", "smtp_host": "127.0.0.1", "smtp_port": smtp_server.port,
                "sender": "alerts@fleet.test", "recipients": ["oncall@fleet.test", "lead@fleet.test"],
            },
        ],
    )  # fmt: skip
    harness = AlertingHarness(tmp_path, AlertRouter(channels=channels, dagster_ui_url=UI))
    write_scored_partitions(harness.parquet, _fleet())
    result = harness.run(partition_key="2026-11-08")
    assert result.success
    incidents = incident_store.read_incidents(harness.store).set_index("incident_id")
    cohort_id = incidents.index[incidents["kind"] == "cohort"][0]
    standalone = set(incidents.index[(incidents["kind"] == "device") & incidents["cohort_incident_id"].isna()])
    assert len(standalone) == 2 and (incidents["cohort_incident_id"] == cohort_id).sum() == 4

    # generic webhook: one JSON POST per incident that is not covered by the cohort incident
    hooks = http_server.posts("/hook")
    assert {p["incident"]["incident_id"] for p in hooks} == standalone | {cohort_id}
    assert len(hooks) == 3
    assert all(r["headers"]["X-Team"] == "fleet" for r in http_server.requests if r["path"] == "/hook")
    cohort_post = next(p for p in hooks if p["incident"]["kind"] == "cohort")
    assert cohort_post["type"] == "incident" and cohort_post["dagster_url"] == LINK
    assert cohort_post["incident"]["cohort"] == "Acme|X1|1" and cohort_post["incident"]["devices"] == 4
    assert cohort_post["incident"]["started_at"] == "2026-11-08T10:00:00Z"
    assert cohort_post["title"].startswith("[HIGH] cohort incident on cohort Acme|X1|1 (4 devices, peak share 80%)")
    webhook_log = _log(harness, "ops-webhook")
    assert Counter(webhook_log["status"]) == {"delivered": 3, "suppressed": 4}

    # Slack: Block Kit, only high and critical (the cohort incident and dev-a)
    slack = http_server.posts("/slack/T000/B000/secret")
    assert len(slack) == 2
    device_message = next(p for p in slack if "dev-a" in p["text"])
    assert device_message["text"].startswith("[CRITICAL] device incident on device dev-a")
    kinds = [block["type"] for block in device_message["blocks"]]
    assert kinds[0] == "header" and "section" in kinds and "actions" in kinds
    fields = " ".join(f["text"] for b in device_message["blocks"] if b["type"] == "section" for f in b.get("fields", []))
    assert "*Severity*" in fields and "critical (95/100)" in fields and "*Device*\n`dev-a`" in fields
    texts = " ".join(b["text"]["text"] for b in device_message["blocks"] if b["type"] == "section" and "text" in b)
    assert "*Top features*: cpu_util_pct__dev_1h, memory_used_pct__dev_1h, battery_temp_c__cohort_z" in texts
    [button] = next(b for b in device_message["blocks"] if b["type"] == "actions")["elements"]
    assert button["url"] == LINK
    cohort_message = next(p for p in slack if p is not device_message)
    assert "*Cohort*\n`Acme|X1|1`" in json.dumps(cohort_message["blocks"]).replace("\\n", "\n")

    # email over SMTP: one message per incident, to every recipient
    assert len(smtp_server.messages) == 3
    subjects = sorted(m["Subject"] for m in smtp_server.messages)
    assert any(s.startswith("[anomaly_assets] [CRITICAL] device incident on device dev-a") for s in subjects)
    assert any(s.startswith("[anomaly_assets] [MEDIUM] device incident on device dev-b") for s in subjects)
    assert set(smtp_server.envelopes[0].rcpt_tos) == {"oncall@fleet.test", "lead@fleet.test"}
    assert LINK in smtp_server.messages[0].get_content()

    metadata = result.asset_materializations_for_node("alert_deliveries")[0].metadata
    assert metadata["delivered"].value == 3 + 2 + 3 and metadata["failed"].value == 0
    [check] = result.get_asset_check_evaluations()
    assert check.passed

    # re-running the partition (incidents and deliveries) never sends twice
    before = (len(http_server.requests), len(smtp_server.messages))
    assert harness.run(partition_key="2026-11-08").success
    assert (len(http_server.requests), len(smtp_server.messages)) == before
    pd.testing.assert_frame_equal(webhook_log, _log(harness, "ops-webhook"))


def test_a_failing_channel_is_recorded_and_retried_next_run_and_never_sends_twice(tmp_path, http_server):
    channels = _channels_file(
        tmp_path,
        [{"name": "flaky", "type": "webhook", "url": http_server.url("/flaky"), "retries": 1, "backoff_seconds": 0.01}],
    )
    http_server.plans["/flaky"] = [500] * 6  # both attempts of every incident fail in the first run
    harness = AlertingHarness(tmp_path, AlertRouter(channels=channels, dagster_ui_url=UI))
    fleet = _fleet("2026-11-08")
    write_scored_partitions(harness.parquet, fleet.loc[~fleet["device_id"].str.startswith("x1")])
    first = harness.run(partition_key="2026-11-08")
    assert first.success
    log = _log(harness, "flaky")
    assert list(log["status"]) == ["failed", "failed"]
    assert (log["attempts"] == 1).all()
    assert log["detail"].str.contains("failed after 2 attempt").all() and log["detail"].str.contains("HTTP 500").all()
    [check] = first.get_asset_check_evaluations()
    assert not check.passed and check.metadata["failed_deliveries"].value == 2
    assert len(http_server.posts("/flaky")) == 4

    # the endpoint recovers; the next day's run retries what failed (the day itself has no incidents)
    http_server.plans["/flaky"] = []
    write_scored_partitions(harness.parquet, device_rows("dev-a", "Acme|A|1", "2026-11-09 08:00", "0000"))
    second = harness.run(partition_key="2026-11-09")
    assert second.success
    log = _log(harness, "flaky")
    assert list(log["status"]) == ["delivered", "delivered"]
    assert (log["attempts"] == 2).all()
    assert log["delivered_at"].notna().all()
    [check] = second.get_asset_check_evaluations()
    assert check.passed
    delivered = Counter(p["incident"]["incident_id"] for p in http_server.posts("/flaky", status=200))
    assert sorted(delivered.values()) == [1, 1]

    for day in ("2026-11-08", "2026-11-09"):  # re-runs: nothing more is sent
        assert harness.run(partition_key=day).success
    assert Counter(p["incident"]["incident_id"] for p in http_server.posts("/flaky", status=200)) == delivered


def test_rate_limit_sends_n_alerts_then_one_digest(tmp_path, http_server):
    channels = _channels_file(
        tmp_path, [{"name": "limited", "type": "webhook", "url": http_server.url("/limited"), "rate_limit_per_hour": 2}]
    )
    harness = AlertingHarness(tmp_path, AlertRouter(channels=channels, dagster_ui_url=UI))
    five = scored(*[device_rows(f"dev-{i}", f"Acme|M{i}|1", "2026-11-08 08:00", "0111110000000", severity=60 + 5 * i) for i in range(5)])
    write_scored_partitions(harness.parquet, five)
    assert harness.run(partition_key="2026-11-08").success
    posts = http_server.posts("/limited")
    assert [p["type"] for p in posts] == ["incident", "incident", "digest"]
    assert {p["incident"]["device_id"] for p in posts[:2]} == {"dev-4", "dev-3"}  # the most severe go out alone
    digest = posts[2]
    assert digest["count"] == 3 and {i["device_id"] for i in digest["incidents"]} == {"dev-0", "dev-1", "dev-2"}
    assert digest["title"].startswith("Digest: 3 more incidents over the rate limit of 2/h")
    log = _log(harness, "limited")
    assert Counter(log["status"]) == {"delivered": 2, "digested": 3}
    assert log.loc[log["status"] == "digested", "digest_id"].nunique() == 1

    # the limit is per rolling hour, across runs: the next day's new incidents all go to a digest
    write_scored_partitions(harness.parquet, scored(*[device_rows(f"dev-{i}", f"Acme|M{i}|1", "2026-11-09 08:00", "0111110000000") for i in range(2)]))
    assert harness.run(partition_key="2026-11-09").success
    posts = http_server.posts("/limited")
    assert [p["type"] for p in posts] == ["incident", "incident", "digest", "digest"]
    assert posts[3]["count"] == 2
    # and a re-run of both days sends nothing
    for day in ("2026-11-08", "2026-11-09"):
        assert harness.run(partition_key=day).success
    assert len(http_server.posts("/limited")) == 4


def test_channel_configuration_errors_name_the_channel_and_the_source(tmp_path, monkeypatch):
    with pytest.raises(ChannelConfigError, match=r"alert channels file .*missing.yaml does not exist"):
        load_channels(str(tmp_path / "missing.yaml"))
    with pytest.raises(ChannelConfigError, match=r"channel 'x': type 'teams' is not one of"):
        parse_channels('[{"name": "x", "type": "teams", "url": "http://h"}]')
    with pytest.raises(ChannelConfigError, match=r"channel 'm': an email channel needs \['sender', 'recipients'\]"):
        parse_channels("channels:\n  - {name: m, type: email, smtp_host: h}")
    with pytest.raises(ChannelConfigError, match=r"channel 's': unknown keys \['uri'\]"):
        parse_channels("- {name: s, type: slack, uri: http://h}")
    with pytest.raises(ChannelConfigError, match=r"repeated: \['a'\]"):
        parse_channels("- {name: a, type: webhook, url: http://h}\n- {name: a, type: slack, url: http://h}")
    assert load_channels("") == []
    inline = AlertRouter.from_env({"ANOMALY_ASSETS_ALERT_CHANNELS": '[{"name": "w", "type": "webhook", "url_env": "W_URL"}]'})
    [channel] = inline.channel_configs()
    assert channel.min_severity == "low" and channel.kinds == ("device", "cohort")
    monkeypatch.delenv("W_URL", raising=False)
    with pytest.raises(ChannelConfigError, match="environment variable W_URL \\(url_env\\) is not set"):
        channel.resolve_url({})
    assert AlertRouter.from_env({}).asset_url() == "http://127.0.0.1:3000/assets/device_incidents"

    harness = AlertingHarness(tmp_path, AlertRouter(channels=str(tmp_path / "nope.yaml")))
    write_scored_partitions(harness.parquet, device_rows("dev-a", "Acme|A|1", "2026-11-08 08:00", "0000"))
    with pytest.raises(Exception, match="nope.yaml does not exist"):
        harness.run(partition_key="2026-11-08")


def test_claims_let_only_one_run_send_and_take_over_failed_or_abandoned_ones(tmp_path):
    store = ResultsStore(url=f"sqlite:///{tmp_path / 'results.db'}")
    log = DeliveryLog(store.engine, "ops", stale_claim=dt.timedelta(minutes=15))
    incident = {"incident_id": "inc-1", "last_partition": "2026-11-08", "kind": "device", "severity_level": "high"}
    now = dt.datetime(2026, 11, 8, 12, tzinfo=dt.UTC)
    assert log.claim(incident, now)
    assert not log.claim(incident, now)  # a concurrent run finds it taken
    log.finish(["inc-1"], "failed", now, "HTTP 500")
    assert log.claim(incident, now + dt.timedelta(minutes=1))  # the next run retries it, once
    assert not log.claim(incident, now + dt.timedelta(minutes=1))
    assert log.claim(incident, now + dt.timedelta(minutes=20))  # a claim left by a crashed run goes stale
    log.finish(["inc-1"], "delivered", now + dt.timedelta(minutes=20), "1 attempt(s)")
    assert not log.claim(incident, now + dt.timedelta(days=1))
    [row] = incident_store.read_log(store, "ops").to_dict("records")
    assert (row["status"], row["attempts"]) == ("delivered", 2)


def test_two_runs_delivering_at_once_send_each_incident_once(tmp_path, http_server):
    channels = json.dumps([{"name": "ops", "type": "webhook", "url": http_server.url("/race")}])
    harness = AlertingHarness(tmp_path, AlertRouter(channels=channels))
    write_scored_partitions(harness.parquet, scored(*[device_rows(f"dev-{i}", f"Acme|M{i}|1", "2026-11-08 08:00", "0111110000000") for i in range(8)]))
    assert harness.run(partition_key="2026-11-08", assets=(device_incidents,)).success
    candidates = incident_store.delivery_candidates(harness.store, ["2026-11-08"])
    assert len(candidates) == 8
    reports, errors = [], []

    def deliver():
        try:
            reports.append(AlertRouter(channels=channels).deliver(harness.store.engine, candidates))
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    sent = Counter(p["incident"]["incident_id"] for p in http_server.posts("/race"))
    assert len(sent) == 8 and set(sent.values()) == {1}
    assert sum(r.total("delivered") for r in reports) == 8 and sum(r.total("already_done") for r in reports) == 8


def test_unreachable_or_misconfigured_channels_fail_without_leaking_the_secret_url(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.delenv("UNSET_WEBHOOK_URL", raising=False)
    channels = json.dumps(
        [
            {"name": "down", "type": "slack", "url": f"http://127.0.0.1:{closed}/services/T0/B0/supersecret", "retries": 1, "backoff_seconds": 0.01},
            {"name": "unset", "type": "webhook", "url_env": "UNSET_WEBHOOK_URL", "retries": 3, "backoff_seconds": 5},
        ]
    )
    harness = AlertingHarness(tmp_path, AlertRouter(channels=channels))
    write_scored_partitions(harness.parquet, device_rows("dev-a", "Acme|A|1", "2026-11-08 08:00", "0111110000"))
    result = harness.run(partition_key="2026-11-08")
    assert result.success
    down, unset = _log(harness, "down").iloc[0], _log(harness, "unset").iloc[0]
    assert down["status"] == "failed" and "failed after 2 attempt(s)" in down["detail"] and "127.0.0.1" in down["detail"]
    assert "supersecret" not in down["detail"]
    assert unset["status"] == "failed"
    assert "failed after 1 attempt(s): channel 'unset': environment variable UNSET_WEBHOOK_URL (url_env) is not set" in unset["detail"]
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and "supersecret" not in str(check.metadata["failures"].value)


def test_slack_digest_is_block_kit():
    from anomaly_assets.core.alerts import digest_payload

    [channel] = parse_channels("- {name: s, type: slack, url: http://h, rate_limit_per_hour: 1}")
    incidents = [
        {"incident_id": f"i{i}", "kind": "device", "device_id": f"dev-{i}", "cohort": "Acme|A|1", "severity_level": "high", "started_at": pd.Timestamp("2026-11-08 10:00", tz="UTC")}
        for i in range(60)
    ]
    payload = digest_payload(incidents, channel, LINK)
    assert payload["text"] == "Digest: 60 more incidents over the rate limit of 1/h (60 high)"
    assert [b["type"] for b in payload["blocks"]] == ["header", "section", "actions"]
    assert "dev-0" in payload["blocks"][1]["text"]["text"] and payload["blocks"][1]["text"]["text"].endswith("more")
    assert len(payload["blocks"][1]["text"]["text"]) <= 3000
    assert payload["blocks"][2]["elements"][0]["url"] == LINK
