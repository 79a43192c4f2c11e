"""The anomaly explorer after a demo run: every page answers from the results database and the
partition files; a device's anomaly marks are the rows of ``anomaly_events``; filters filter;
the bearer token guards every page when set; links from metadata and alerts open real pages.

The browser half (Playwright driving Debian's Chromium, as test_browser.py) opens the explorer
served by ``anomaly-assets explore``, goes from the incident list to a device page and checks
the drawn plot. Screenshots go to ``$ANOMALY_ASSETS_SCREENSHOT_DIR`` when set (the README's:
``ANOMALY_ASSETS_SCREENSHOT_DIR=docs/screenshots .venv/bin/python -m pytest
anomaly_assets_tests/test_explorer.py``), else to the test's temporary directory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from anomaly_assets.cli import main
from anomaly_assets.core.feature_words import describe_feature
from anomaly_assets.explorer import links
from anomaly_assets.explorer.app import create_app
from anomaly_assets.explorer.charts import ANOMALY_TRACE
from anomaly_assets.resources.results_store import ResultsStore, quarantined_telemetry
from anomaly_assets_tests.conftest import require_service
from anomaly_assets_tests.conftest import free_port
from anomaly_assets_tests.dagster_processes import stop, tail
from anomaly_assets_tests.test_browser import CHROMIUM_ARGS, _chromium

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REGRESSION_DAY = "2026-11-09"  # the synthetic fleet's firmware regression (9th day)
TOKEN = "explorer-test-token"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    saved = dict(os.environ)
    home = tmp_path_factory.mktemp("explorer") / "home"
    # 9 days: 7 to train, then 2026-11-08 and the regression day scored, incidents and alerts.
    assert main(["demo", "--devices", "30", "--days", "9", "--seed", "6", "--home", str(home), "--json"]) == 0
    store = ResultsStore(url=f"sqlite:///{home / 'results.db'}")
    # The synthetic fleet delivers clean rows; two quarantined rows as validated_telemetry writes them.
    store.replace_partitions(quarantined_telemetry, [REGRESSION_DAY], pd.DataFrame({
        "partition_date": [REGRESSION_DAY] * 2, "device_id": ["dev-000003", None],
        "timestamp": ["2026-11-09T10:05:00+00:00", "2026-11-09T11:00:00+00:00"],
        "rule": ["range.battery_level_pct", "not_null.device_id"],
        "reason": ["battery_level_pct = 140.0 is outside [0, 100]", "device_id is null"],
        "row_json": [json.dumps({"device_id": "dev-000003", "battery_level_pct": 140.0}), json.dumps({"device_id": None})],
    }))  # fmt: skip
    yield home
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def store(home) -> ResultsStore:
    return ResultsStore(url=f"sqlite:///{home / 'results.db'}")


@pytest.fixture(scope="module")
def client(home, store):
    return create_app(store, str(home / "parquet")).test_client()


def _figure(html: bytes, element: str) -> dict:
    match = re.search(rf'<script type="application/json" id="{element}-figure">(.*?)</script>', html.decode(), re.S)
    assert match, f"no {element} figure on the page"
    return json.loads(match.group(1).replace("<\\/", "</"))


def _flagged_rows(store: ResultsStore, device: str, day: str) -> list[pd.Timestamp]:
    events = store.read_frame(
        "SELECT timestamp FROM anomaly_events WHERE device_id = :d AND partition_date = :p ORDER BY timestamp",
        {"d": device, "p": day},
    )
    return list(pd.to_datetime(events["timestamp"], utc=True, format="ISO8601"))


def test_every_page_answers(client, store):
    for url in ("/", f"/days/{REGRESSION_DAY}", "/incidents", f"/incidents?day={REGRESSION_DAY}&kind=cohort", "/quarantine"):
        response = client.get(url)
        assert response.status_code == 200, url
    assert client.get("/static/plotly.min.js").data.startswith(b"/**")  # plotly.js from the plotly package
    assert client.get("/devices/no-such-device").status_code == 404
    assert client.get("/days/not-a-day").status_code == 400


def test_incident_filters_and_the_regressions_cohort_incident(client, store):
    cohort = store.read_frame(
        "SELECT * FROM incidents WHERE kind = 'cohort' AND first_partition <= :d AND last_partition >= :d ORDER BY devices DESC",
        {"d": REGRESSION_DAY},
    )
    assert len(cohort), "the firmware regression opened no cohort incident"
    widest = cohort.iloc[0]
    listing = client.get(f"/incidents?day={REGRESSION_DAY}&kind=cohort").data.decode()
    assert f"<code>{widest['incident_id'][:12]}</code>" in listing
    devices_only = client.get(f"/incidents?day={REGRESSION_DAY}&kind=device&severity=critical").data.decode()
    assert f"<code>{widest['incident_id'][:12]}</code>" not in devices_only  # only linked from its devices' rows
    assert 'class="badge cohort">cohort' not in devices_only and "high (" not in devices_only
    page = client.get(links.incident_page("", widest["incident_id"])).data.decode()
    attached = store.read_frame("SELECT device_id FROM incidents WHERE cohort_incident_id = :i", {"i": widest["incident_id"]})
    assert len(attached)
    for device in attached["device_id"]:
        assert f'href="/devices/{device}?' in page


def test_device_page_marks_the_rows_anomaly_events_holds(client, store):
    worst = store.read_frame(
        "SELECT device_id FROM device_daily_summary WHERE partition_date = :d ORDER BY anomalies DESC, device_id LIMIT 1",
        {"d": REGRESSION_DAY},
    )["device_id"].iloc[0]
    response = client.get(links.device_page("", worst, day=REGRESSION_DAY))
    assert response.status_code == 200
    figure = _figure(response.data, "device-plot")
    score_marks = [t for t in figure["data"] if t["name"] == ANOMALY_TRACE and "yaxis" not in t]
    assert len(score_marks) == 1
    assert [pd.Timestamp(x) for x in score_marks[0]["x"]] == _flagged_rows(store, worst, REGRESSION_DAY)
    metric_panels = [t for t in figure["data"] if t.get("yaxis") and t["name"] != ANOMALY_TRACE and t["mode"] == "lines"]
    assert len(metric_panels) == 11  # every metric of the synthetic fleet, over the day's 288 rows
    # the day's rows, at most 288 (a quarantined row, or a metric the device did not report in a
    # row, such as a dropout, has no point there)
    assert 280 <= max(len(t["x"]) for t in metric_panels) <= 288 and all(len(t["x"]) > 200 for t in metric_panels)
    html = response.data.decode()
    top = store.read_frame(
        "SELECT top_feature_1 FROM anomaly_events WHERE device_id = :d AND partition_date = :p", {"d": worst, "p": REGRESSION_DAY}
    )["top_feature_1"].value_counts().index[0]
    assert describe_feature(top).replace("'", "&#39;") in html  # top features in words
    assert "synthetic fleet: injected fault" in html


def test_device_page_shows_the_range_the_user_chooses_up_to_the_cap(client, store):
    from anomaly_assets.explorer.app import MAX_DEVICE_DAYS

    worst = store.read_frame(
        "SELECT device_id FROM device_daily_summary WHERE partition_date = :d ORDER BY max_severity DESC LIMIT 1",
        {"d": REGRESSION_DAY},
    )["device_id"].iloc[0]
    # A week: the metrics of every day (the training days have features, no scores), the marks of both scored days.
    week = client.get(f"/devices/{worst}?from=2026-11-03&day={REGRESSION_DAY}")
    figure = _figure(week.data, "device-plot")
    metric_panels = [t for t in figure["data"] if t.get("yaxis") and t["name"] != ANOMALY_TRACE and t["mode"] == "lines"]
    week_days = {str(d.date()) for d in pd.date_range("2026-11-03", REGRESSION_DAY)}
    assert len(metric_panels) == 11 and all({x[:10] for x in t["x"]} == week_days for t in metric_panels)
    [marks] = [t["x"] for t in figure["data"] if t["name"] == ANOMALY_TRACE and "yaxis" not in t]
    assert [pd.Timestamp(x) for x in marks] == _flagged_rows(store, worst, "2026-11-08") + _flagged_rows(store, worst, REGRESSION_DAY)
    html = week.data.decode()
    assert f'href="?from=2026-11-03&day={REGRESSION_DAY}" class="current">7 days</a>' in html  # the quick choices
    assert 'id="range-shortened"' not in html
    # Longer than the cap: the page says so and shows the last MAX_DEVICE_DAYS days (here all 9 stored).
    html = client.get(f"/devices/{worst}?from=2026-09-01&day={REGRESSION_DAY}").data.decode()
    assert 'id="range-shortened"' in html and f"at most {MAX_DEVICE_DAYS} days" in html
    assert f'<input type="date" name="from" value="{(pd.Timestamp(REGRESSION_DAY) - pd.Timedelta(days=MAX_DEVICE_DAYS - 1)).date()}">' in html
    figure = _figure(html.encode(), "device-plot")
    stored_days = {str(d.date()) for d in pd.date_range("2026-11-01", REGRESSION_DAY)}
    assert all({x[:10] for x in t["x"]} == stored_days for t in figure["data"] if t.get("yaxis") and t["mode"] == "lines")
    assert "No partition files for 2026-10-" in html  # the days before the first partition


def test_token_guards_every_page(home, store):
    guarded = create_app(store, str(home / "parquet"), token=TOKEN).test_client()
    assert guarded.get("/incidents").status_code == 302  # a browser is sent to the login form
    assert guarded.get("/incidents", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/static/plotly.min.js").status_code == 401
    assert guarded.get("/incidents", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert guarded.post("/login", data={"token": "wrong"}).status_code == 401
    signed_in = guarded.post("/login", data={"token": TOKEN, "next": "/quarantine"})
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/quarantine"
    cookie = signed_in.headers["Set-Cookie"]
    assert TOKEN not in cookie and "HttpOnly" in cookie
    assert guarded.get("/quarantine").status_code == 200  # the cookie from the form
    assert guarded.get("/healthz").status_code == 200


def test_metadata_and_alerts_link_the_explorer(monkeypatch):
    from anomaly_assets.core.alerts import webhook_payload
    from anomaly_assets.defs.scoring.partition_summary import readable_top_devices
    from anomaly_assets.resources.alert_router import AlertRouter

    monkeypatch.setenv(links.EXPLORER_URL_ENV, "http://explorer.example:8050/")
    top = pd.DataFrame({"device_id": ["dev-1"], "cohort": ["A|B|13"], "anomalies": [3], "max_severity": [91.0],
                        "top_features": ["cpu_util_pct__cohort_z, net_rx_mb__dev_1h, nan"]})  # fmt: skip
    table = readable_top_devices(top, "2026-11-09")
    assert table["device_id"].iloc[0] == "[dev-1](http://explorer.example:8050/devices/dev-1?day=2026-11-09)"
    assert table["top_features"].iloc[0].startswith(
        "cpu_util_pct__cohort_z (CPU use (%): distance from its cohort's usual value at this hour (z-score)); "
        "net_rx_mb__dev_1h (network received (MB): deviation from its 1-hour mean)"
    )
    router = AlertRouter.from_env()
    incident = {"incident_id": "abc123", "kind": "device", "device_id": "dev-1", "severity_level": "high"}
    link = router.incident_url(incident)
    assert link == "http://explorer.example:8050/incidents/abc123"
    assert webhook_payload({**incident, "cohort": None}, router.asset_url(), link)["explorer_url"] == link


def _get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:  # not listening yet
        return 0


def test_in_a_browser_from_the_incident_list_to_a_device_plot(home, store, tmp_path):
    chromium = _chromium()
    require_service(chromium is not None, "no Chromium at /usr/bin/chromium (apt-get install chromium)")
    require_service(importlib.util.find_spec("playwright") is not None, "Playwright is not installed (pip install -e '.[dev]')")
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("ANOMALY_ASSETS_SCREENSHOT_DIR") or tmp_path / "screenshots").absolute()
    shots.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ANOMALY_ASSETS_HOME": str(home), "ANOMALY_ASSETS_EXPLORER_TOKEN": TOKEN,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    env.pop("ANOMALY_ASSETS_ENV", None)
    log = tmp_path / "explore.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(BIN / "anomaly-assets"), "explore", "--port", str(port)], cwd=REPO, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    page = None
    try:
        deadline = time.monotonic() + 60
        while _get(f"{url}/healthz") != 200:
            assert server.poll() is None and time.monotonic() < deadline, f"explore did not start:\n{tail(log)}"
            time.sleep(0.5)
        assert _get(f"{url}/incidents") == 401  # redirected to the login form, which answers 401
        assert _get(f"{url}/incidents", token="wrong") == 401
        assert _get(f"{url}/incidents", token=TOKEN) == 200
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                context.set_default_timeout(30_000)
                page = context.new_page()
                # Without the token a browser lands on the login form; the token signs it in.
                page.goto(f"{url}/incidents?day={REGRESSION_DAY}")
                expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
                page.fill("input[name=token]", TOKEN)
                page.get_by_role("button", name="Sign in").click()
                expect(page.get_by_role("heading", name="Incidents")).to_be_visible()
                page.screenshot(path=shots / "explorer-incidents.png")

                page.goto(f"{url}/")
                expect(page.get_by_role("heading", name="Scored days")).to_be_visible()
                page.screenshot(path=shots / "explorer-days.png")
                page.goto(f"{url}/days/{REGRESSION_DAY}")
                expect(page.locator("#hourly-plot[data-drawn=true]")).to_be_attached()
                expect(page.locator("#hourly-plot .heatmaplayer")).to_be_attached()
                page.screenshot(path=shots / "explorer-day.png", full_page=True)
                page.goto(f"{url}/quarantine?day={REGRESSION_DAY}")
                expect(page.locator("#quarantined")).to_contain_text("battery_level_pct = 140.0 is outside [0, 100]")
                page.screenshot(path=shots / "explorer-quarantine.png")

                cohort_link = page.goto(f"{url}/incidents?day={REGRESSION_DAY}&kind=cohort")
                assert cohort_link.ok
                page.locator("#incidents a[href^='/incidents/']").first.click()
                expect(page.locator("#attached")).to_be_visible()
                page.screenshot(path=shots / "explorer-cohort-incident.png")

                # From the list of device incidents to the first device's page.
                page.goto(f"{url}/incidents?day={REGRESSION_DAY}&kind=device")
                first = page.locator("#incidents a.device-link").first
                device = first.inner_text()
                first.click()
                page.wait_for_url(re.compile(rf"/devices/{device}\?"))
                plot = page.locator("#device-plot[data-drawn=true]")
                expect(plot).to_be_attached()
                expect(page.locator("#device-plot .scatterlayer .trace").first).to_be_attached()
                drawn = page.evaluate(
                    f"""() => document.getElementById('device-plot').data
                          .filter(t => t.name === {json.dumps(ANOMALY_TRACE)} && !t.yaxis).map(t => t.x)"""
                )
                shown_days = re.search(r"from=(\d{4}-\d\d-\d\d)&day=(\d{4}-\d\d-\d\d)", page.url).groups()
                expected = [t for day in pd.date_range(*shown_days).strftime("%Y-%m-%d") for t in _flagged_rows(store, device, day)]
                assert expected, f"{device} has a device incident but no flagged row on {shown_days}"
                assert len(drawn) == 1 and [pd.Timestamp(x) for x in drawn[0]] == expected
                points = page.locator("#device-plot .scatterlayer .trace .points path").count()
                assert points >= len(expected)  # the marks are drawn, not only in the data
                page.screenshot(path=shots / "explorer-device.png", full_page=True)
            except BaseException:
                if page is not None:
                    page.screenshot(path=shots / "explorer-failure.png")
                raise
            finally:
                browser.close()
    except BaseException:
        print("--- anomaly-assets explore log ---\n" + tail(log))
        raise
    finally:
        stop(server, "anomaly-assets explore")
