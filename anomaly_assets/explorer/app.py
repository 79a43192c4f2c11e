"""The explorer's pages (Flask, server-rendered Jinja2 templates, Plotly charts).

Read-only: every route is a GET over ``ExplorerQueries`` and ``DeviceRows``. With a token set
(``ANOMALY_ASSETS_EXPLORER_TOKEN``) every page asks for ``Authorization: Bearer <token>`` or the
cookie the login form sets (a hash of the token, never the token itself).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import os
import time
from pathlib import Path

import pandas as pd
from flask import Flask, Response, abort, g, redirect, render_template, request, send_file, url_for

from anomaly_assets import audit
from anomaly_assets.core.audit import ACTIONS, PROXY_USER_HEADER
from anomaly_assets.core.feature_words import describe_feature, metric_words
from anomaly_assets.explorer import charts
from anomaly_assets.explorer.device_rows import DeviceRows
from anomaly_assets.explorer.queries import PAGE_ROWS, SEVERITY_LEVELS, ExplorerQueries, IncidentFilter, day_window

COOKIE = "anomaly_explorer"
# A device page reads two partition files a day (in parallel): the cap keeps it under 1 s at
# 10,000 devices a day (benchmarks/bench_explorer.py).
MAX_DEVICE_DAYS = 14
DEVICE_RANGES = (1, 3, 7, 14)  # the page's quick choices, in days ending with the shown day
OPEN_PATHS = ("/login", "/healthz")


def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _cookie_value(token: str) -> str:
    return hashlib.sha256(f"anomaly-explorer:{token}".encode()).hexdigest()


def _day(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        abort(400, f"not a day (YYYY-MM-DD): {value!r}")


def _when(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        return "-"
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%d %H:%M")


def _features_in_words(text: str | None) -> list[tuple[str, str]]:
    codes = [c.strip() for c in str(text or "").replace(";", ",").split(",") if c.strip()]
    return [(c, describe_feature(c)) for c in codes]


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def create_app(store, storage_path: str, token: str | None = None) -> Flask:
    app = Flask(__name__)
    queries = ExplorerQueries(store)
    device_rows = DeviceRows(storage_path)
    app.jinja_env.filters.update(words=describe_feature, when=_when, features=_features_in_words, metric=metric_words)
    app.jinja_env.globals.update(severity_levels=SEVERITY_LEVELS)

    @app.context_processor
    def _signed_in_as():
        # The user the authenticating proxy (deploy/Caddyfile) signed in; absent without the proxy.
        return {"signed_in_as": request.headers.get(PROXY_USER_HEADER)}

    @app.before_request
    def _authorize():
        g.started = time.perf_counter()
        if token is None or request.path in OPEN_PATHS:
            return None
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), token.encode()):
            return None
        if hmac.compare_digest(request.cookies.get(COOKIE, ""), _cookie_value(token)):
            return None
        if request.path.startswith("/static/") or header:
            return Response("unauthorized\n", 401, {"WWW-Authenticate": 'Bearer realm="anomaly explorer"'})
        return redirect(url_for("login", next=request.full_path))

    @app.after_request
    def _timing(response: Response) -> Response:
        if "started" in g:
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - g.started) * 1000:.1f}"
        return response

    @app.route("/login", methods=["GET", "POST"])
    def login():
        target = request.values.get("next") or "/"
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        if token is None:
            return redirect(target)
        if request.method == "POST":
            if hmac.compare_digest(request.form.get("token", "").encode(), token.encode()):
                response = redirect(target)
                response.set_cookie(COOKIE, _cookie_value(token), httponly=True, samesite="Strict")
                return response
            return render_template("login.html", next=target, failed=True), 401
        return render_template("login.html", next=target, failed=False), 401

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/static/plotly.min.js")
    def plotly_js():
        return send_file(_plotly_js(), mimetype="application/javascript", max_age=86400)

    @app.get("/")
    def home():
        return render_template("home.html", days=_records(queries.recent_days()))

    @app.get("/days/<day>")
    def day_page(day: str):
        day = _day(day)
        summary = queries.day_summary(day)
        per_hour = queries.anomalies_per_hour(day)
        _, incident_count = queries.incidents(IncidentFilter(day=day))
        return render_template(
            "day.html",
            day=day,
            summary=summary,
            figure=charts.to_json(charts.hourly_figure(per_hour)) if len(per_hour) else None,
            top=_records(queries.top_devices(day)),
            drift=_records(queries.drift(day)),
            quarantine=_records(queries.quarantine_summary(day)),
            incident_count=incident_count,
            previous=(dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat(),
            next=(dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat(),
        )

    @app.get("/incidents")
    def incident_list():
        try:
            page = max(int(request.args.get("page", 1)), 1)
        except ValueError:
            page = 1
        filters = IncidentFilter(
            day=_day(request.args.get("day")),
            severity=request.args.get("severity") or None,
            cohort=request.args.get("cohort") or None,
            status=request.args.get("status") or None,
            kind=request.args.get("kind") or None,
            page=page,
        )
        rows, total = queries.incidents(filters)
        args = {k: v for k, v in request.args.items() if v and k != "page"}
        return render_template(
            "incidents.html",
            incidents=_records(rows),
            total=total,
            filters=filters,
            cohorts=queries.incident_cohorts(),
            pages=max(math.ceil(total / PAGE_ROWS), 1),
            args=args,
        )

    @app.get("/incidents/<incident_id>")
    def incident_page(incident_id: str):
        incident = queries.incident(incident_id)
        if incident is None:
            abort(404, f"no incident {incident_id}")
        attached = queries.attached_device_incidents(incident_id) if incident["kind"] == "cohort" else pd.DataFrame()
        listed = [d.strip() for d in str(incident.get("device_ids") or "").split(",") if d.strip()]
        return render_template("incident.html", incident=incident, attached=_records(attached), devices=listed)

    @app.get("/devices/<path:device_id>")
    def device_page(device_id: str):
        days = queries.device_days(device_id)
        if days.empty:
            abort(404, f"no scored rows for device {device_id}")
        last = _day(request.args.get("day")) or days["partition_date"].iloc[-1]
        first = _day(request.args.get("from")) or last
        if first > last:
            first, last = last, first
        earliest, _ = day_window(last, MAX_DEVICE_DAYS)
        asked, first = (first if first < earliest else None), max(first, earliest)
        cohort = days["cohort"].dropna().iloc[-1] if days["cohort"].notna().any() else None
        events = queries.device_events(device_id, first, last)
        incidents = queries.device_incidents(device_id, cohort, first, last)
        rows, metrics, missing = device_rows.read(device_id, first, last)
        top = pd.concat([events[f"top_feature_{i}"] for i in (1, 2, 3)]).dropna() if len(events) else pd.Series(dtype=str)
        top_counts = top.value_counts().head(8)
        first_metrics = list(dict.fromkeys(code.split("__")[0] for code in top_counts.index))
        figure = charts.device_figure(rows, metrics, events, incidents, first_metrics)
        window_days = days.loc[(days["partition_date"] >= first) & (days["partition_date"] <= last)]
        faults = []
        if "anomaly_type" in rows:
            injected = rows.loc[rows["is_injected_anomaly"].fillna(False).astype(bool)]
            faults = sorted(injected["anomaly_type"].dropna().unique().tolist())
        return render_template(
            "device.html",
            device_id=device_id,
            cohort=cohort,
            first=first,
            last=last,
            days=_records(days.iloc[::-1].head(60)),
            window_days=_records(window_days),
            model_versions=sorted(set(window_days["model_version"].astype(str))),
            model_name=days["model_name"].iloc[-1],
            figure=charts.to_json(figure),
            events=len(events),
            top_features=[(code, describe_feature(code), int(n)) for code, n in top_counts.items()],
            incidents=_records(incidents),
            missing=missing,
            has_rows=len(rows) > 0,
            faults=faults,
            anomaly_marks=json.dumps([_when(t) for t in events["timestamp"]]),
            asked=asked,
            max_days=MAX_DEVICE_DAYS,
            ranges=[(n, day_window(last, n)[0]) for n in DEVICE_RANGES],
        )

    @app.get("/quarantine")
    def quarantine():
        days = queries.quarantine_days()
        day = _day(request.args.get("day")) or (days[0] if days else None)
        rule = request.args.get("rule") or None
        try:
            page = max(int(request.args.get("page", 1)), 1)
        except ValueError:
            page = 1
        rows, total = queries.quarantined_rows(day, rule, page) if day else (pd.DataFrame(), 0)
        summary = queries.quarantine_summary(day) if day else pd.DataFrame()
        records = _records(rows)
        for record in records:
            try:
                record["row"] = json.loads(record["row_json"])
            except (TypeError, ValueError):
                record["row"] = {"row_json": record["row_json"]}
        return render_template(
            "quarantine.html",
            day=day,
            days=days,
            rule=rule,
            rows=records,
            total=total,
            page=page,
            pages=max(math.ceil(total / PAGE_ROWS), 1),
            summary=_records(summary),
        )

    @app.get("/audit")
    def audit_page():
        action = request.args.get("action") or None
        if action is not None and action not in ACTIONS:
            abort(400, f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
        entries = audit.entries(store, action=action, limit=PAGE_ROWS)[::-1]
        dagster_url = os.environ.get("DAGSTER_UI_URL", "").rstrip("/")
        return render_template("audit.html", entries=entries, actions=ACTIONS, action=action, dagster_url=dagster_url)

    @app.errorhandler(400)
    @app.errorhandler(404)
    def _not_found(error):
        return render_template("error.html", error=error), error.code

    return app
