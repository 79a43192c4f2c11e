"""End to end in a real browser: dagster-webserver on the embedded default, headless Chromium
(Debian's ``chromium`` driven by Playwright) opens the asset graph, materializes one partition of
``scored_anomalies`` from the UI, waits for the run to succeed, checks the anomaly preview and
that asset check results name their partitions (the demo's single-run backfill included).

Screenshots go to ``$ANOMALY_ASSETS_SCREENSHOT_DIR`` when it is set (the README's images:
``ANOMALY_ASSETS_SCREENSHOT_DIR=docs/screenshots .venv/bin/python -m pytest
anomaly_assets_tests/test_browser.py``), otherwise to the test's temporary directory, so that
``make test`` does not rewrite tracked files on every run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path


from anomaly_assets_tests.conftest import free_port, require_service
from anomaly_assets_tests.dagster_processes import BIN, REPO, stop, tail, wait_for_webserver

PARTITION = "2026-11-08"  # the day after the demo's 7-day training window: the champion scores it
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN_TIMEOUT_S = 150  # launch -> dequeued by the daemon -> success; about 20 s here


def _chromium() -> str | None:
    if os.path.exists("/usr/bin/chromium"):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def _expected_top_devices(home: Path) -> list[dict]:
    """What the preview should show: the product's own ranking of the partition's flagged rows."""
    import sqlite3

    import pandas as pd

    from anomaly_assets.core.scoring import top_devices

    with sqlite3.connect(home / "results.db") as connection:
        events = pd.read_sql(
            "SELECT device_id, cohort, severity, top_feature_1, top_feature_2, top_feature_3 "
            "FROM anomaly_events WHERE partition_date = ?",
            connection,
            params=(PARTITION,),
        )
    return top_devices(events.assign(is_anomaly=True)).to_dict("records")


def test_materialize_a_partition_from_the_ui(tmp_path):
    chromium = _chromium()
    require_service(chromium is not None, "no Chromium at /usr/bin/chromium (apt-get install chromium)")
    require_service(
        importlib.util.find_spec("playwright") is not None, "Playwright is not installed (pip install -e '.[dev]')"
    )
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("ANOMALY_ASSETS_SCREENSHOT_DIR") or tmp_path / "screenshots").absolute()
    shots.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "home"
    env = {
        **os.environ,
        # The subprocesses import this checkout, whatever the virtualenv's install points at.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "ANOMALY_ASSETS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "ANOMALY_ASSETS_FLEET_DEVICES": "20",
        "ANOMALY_ASSETS_FLEET_SEED": "10",
    }
    # 8 days: 7 to train the first (champion) model, then 2026-11-08 scored once by the demo.
    # Seed 10: a fleet whose 2026-11-08 has flagged rows within the alert budget (a 20-device
    # fleet often has none), so the top-devices preview has rows to show.
    demo = subprocess.run(
        [str(BIN / "anomaly-assets"), "demo", "--devices", "20", "--days", "8", "--seed", "10",
         "--home", str(home), "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert demo.returncode == 0, f"demo failed:\n{demo.stdout[-3000:]}\n{demo.stderr[-3000:]}"
    assert json.loads(demo.stdout)["champion_version"], demo.stdout

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    web_log, daemon_log = tmp_path / "webserver.log", tmp_path / "daemon.log"
    processes: list[tuple[subprocess.Popen, str]] = []
    page = None
    try:
        with open(web_log, "w") as log:
            processes.append((subprocess.Popen(
                [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ), "dagster-webserver"))
        # The instance's default run coordinator queues runs launched from the UI: the daemon
        # dequeues them (as `dagster dev` does). Its schedules and sensors are all stopped.
        with open(daemon_log, "w") as log:
            processes.append((subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ), "dagster-daemon"))
        wait_for_webserver(url, processes[0][0], web_log)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1600, "height": 1000})
                context.set_default_timeout(30_000)
                # The "Join the Dagster community" dialog opens on first visit unless this is set.
                context.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")
                page = context.new_page()

                # 1. The asset graph, every group expanded.
                page.goto(f"{url}/asset-groups")
                # "Materialize all (N)…": the graph also holds champion_model, a source asset it observes
                expect(page.get_by_role("button", name=re.compile(r"Materialize all"))).to_be_visible(timeout=60_000)
                skip = page.get_by_role("button", name="Skip", exact=True)
                if skip.is_visible():
                    skip.click()
                page.get_by_role("button", name="Hide navigation").click()
                page.locator('button:has([aria-label="panel_show_right"])').click()  # the group tree
                page.locator("#zoom-slider-container").get_by_role("button", name="settings").click()
                page.get_by_role("menuitem", name=re.compile("Expand all groups")).click()
                page.keyboard.press("Escape")
                for asset in ("raw_telemetry", "device_features", "anomaly_detector", "scored_anomalies"):
                    expect(page.get_by_text(asset, exact=True)).to_be_visible()
                for _ in range(3):  # the expanded graph is taller than the view: zoom out until it fits
                    page.locator('#zoom-slider-container button:has([aria-label="zoom_out"])').click()
                page.wait_for_timeout(1000)  # let the graph settle after the relayout
                page.screenshot(path=shots / "01-asset-graph.png")

                # 2. From the graph to the asset, and launch one partition from the Materialize dialog.
                page.get_by_text("scored_anomalies", exact=True).click()
                page.get_by_text("View in Asset Catalog", exact=True).click()
                page.wait_for_url(re.compile(r"/assets/scored_anomalies"))
                page.get_by_role("button", name="Materialize…").click()
                dialog = page.get_by_role("dialog")
                expect(dialog).to_contain_text("Launch runs to materialize scored_anomalies")
                partitions = dialog.get_by_placeholder("No matching partitions")
                partitions.fill(PARTITION)
                partitions.press("Enter")
                expect(dialog).to_contain_text("1 partition")
                launch = dialog.get_by_role("button", name="Launch 1 run")
                expect(launch).to_be_enabled()
                page.screenshot(path=shots / "02-launch-partition.png")
                launch.click()
                toast = page.get_by_text(re.compile(r"^(Launched|Queued) run [0-9a-f]{8}$"))
                expect(toast).to_be_visible()
                short_id = toast.inner_text().split()[-1]
                page.locator(f'a[href^="/runs/{short_id}"]').filter(has_text="View").click()  # the toast's link
                page.wait_for_url(re.compile(rf"/runs/{short_id}[0-9a-f-]+"))
                run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)

                # 3. The run page follows the run live until it ends.
                outcome = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
                expect(outcome).to_be_visible(timeout=RUN_TIMEOUT_S * 1000)
                assert outcome.inner_text() == "Success", f"run {run_id} ended with {outcome.inner_text()}"
                page.reload()  # drops the "Launched run" toast from the screenshot
                expect(page.get_by_text("Success", exact=True).first).to_be_visible()
                expect(page.get_by_text(f"partition: {PARTITION}")).to_be_visible()
                expect(page.get_by_text("RUN_SUCCESS", exact=True)).to_be_visible()
                page.wait_for_load_state("networkidle")
                page.wait_for_timeout(1500)  # cosmetic: the step chart colours its bars after the events load
                page.screenshot(path=shots / "03-run-success.png")

                # 4. The partition's latest materialization is this run's, with its metadata.
                page.goto(f"{url}/assets/scored_anomalies?view=partitions&partition={PARTITION}")
                expect(page.get_by_text(run_id[:8], exact=True)).to_be_visible()
                top_row = page.get_by_role("row").filter(has=page.get_by_text("top_devices", exact=True))
                for key in ("anomalies", "devices_with_anomalies", "model_version"):
                    # .first: the top_devices table, shown inline when short, has an "anomalies" column too
                    expect(page.get_by_role("row").filter(has=page.get_by_text(key, exact=True)).first).to_be_visible()
                page.screenshot(path=shots / "04-partition-metadata.png")

                # 5. The anomaly preview: the top_devices markdown table.
                # A long table opens from "[Show Markdown]"; a short one (a calm day flags few devices)
                # is shown inline in the metadata row.
                show = top_row.get_by_text("[Show Markdown]")
                if show.count():
                    show.click()
                    table = page.get_by_role("dialog").filter(has_text="top_devices").get_by_role("table")
                else:
                    table = top_row.get_by_role("table")
                expect(table).to_be_visible()
                headers = table.locator("th").all_inner_texts()
                assert headers[:1] == ["device_id"] and "max_severity" in headers, headers
                page.screenshot(path=shots / "05-top-devices-preview.png")
                rows = [
                    dict(zip(headers, row.locator("td").all_inner_texts()))
                    for row in table.locator("tbody tr").all()
                ]
                expected = _expected_top_devices(home)
                assert expected, f"the run flagged no device on {PARTITION}: nothing to preview"
                assert len(rows) == min(10, len(expected)), rows  # the asset previews its top 10
                assert [r["device_id"] for r in rows] == [e["device_id"] for e in expected[: len(rows)]], rows
                for shown, wanted in zip(rows, expected):
                    assert abs(float(shown["max_severity"]) - float(wanted["max_severity"])) < 0.01, (
                        f"{shown['device_id']}: preview shows max_severity {shown['max_severity']!r}, "
                        f"the run flagged {wanted['max_severity']} (cohort {wanted['cohort']!r}): {rows[:3]}"
                    )

                # 6. Check results name their partition, also those of the demo's 7-day single-run backfill.
                page.keyboard.press("Escape")
                page.goto(f"{url}/assets/validated_telemetry?view=checks&checkDetail=rows_accounted_for")
                page.get_by_text("Execution history", exact=True).click()
                for day in ("2026-11-01", "2026-11-04", "2026-11-07", PARTITION):
                    expect(page.get_by_role("row").filter(has=page.get_by_text(day, exact=True)).first).to_be_visible()
                history = page.get_by_role("row").filter(has=page.get_by_text("Passed", exact=True))
                assert history.count() >= 8, history.all_inner_texts()
                assert not [r for r in history.all_inner_texts() if "—" in r], history.all_inner_texts()  # no "no partition"
                page.get_by_text("Partitions", exact=True).last.click()
                expect(page.get_by_text("Passed (8)")).to_be_visible()  # the 7 days of the backfill and the scored day
                page.screenshot(path=shots / "06-check-partitions.png")
            except BaseException:
                if page is not None:
                    page.screenshot(path=shots / "failure.png")
                    print(f"failure screenshot: {shots / 'failure.png'} (at {page.url})")
                raise
            finally:
                browser.close()
    except BaseException:
        print("--- dagster-webserver log ---\n" + tail(web_log))
        print("--- dagster-daemon log ---\n" + tail(daemon_log))
        raise
    finally:
        for process, name in reversed(processes):
            stop(process, name)
    print(f"screenshots in {shots}")
