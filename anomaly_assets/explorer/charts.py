"""Figures for the explorer's pages, drawn in the browser by the plotly.js that ships inside the
``plotly`` package (served by the explorer itself: no CDN).

Figures are plotly.js specs (``{"data": [...], "layout": {...}}``) built as plain dicts and
encoded with plotly's JSON encoder: plotly's Python figure classes validate every property,
which cost ~0.5 s for a device's dozen panels, more than the page may take.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from plotly.utils import PlotlyJSONEncoder

from anomaly_assets.core.feature_words import describe_feature, metric_words

ANOMALY_TRACE = "anomalous rows"  # the Playwright test finds the marks by this name
FAULT_TRACE = "injected fault (synthetic label)"
INCIDENT_COLOURS = {"device": "rgba(230, 120, 20, 0.18)", "cohort": "rgba(130, 60, 200, 0.16)"}
LEGEND_COLOURS = {"device": "rgba(230, 120, 20, 0.6)", "cohort": "rgba(130, 60, 200, 0.6)"}
PANEL_GAP = 0.012


def _base_layout(height: int) -> dict:
    return {
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 30, "b": 40},
        "template": {"layout": {"paper_bgcolor": "white", "plot_bgcolor": "white"}},
        "legend": {"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0},
        "hovermode": "closest",
        "font": {"size": 11},
    }


def _times(values: pd.Series) -> list[str]:
    """ISO 8601 in UTC, converted in one vectorized pass (a two-week page has 4,000 rows a panel)."""
    stamps = pd.to_datetime(values, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ms]")
    unit = "ms" if (stamps.astype(np.int64) % 1000).any() else "s"
    return [f"{t}+00:00" for t in np.datetime_as_string(stamps, unit=unit)]


def _values(values: pd.Series) -> list:
    array = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    out = array.tolist()
    for missing in np.flatnonzero(np.isnan(array)):
        out[missing] = None
    return out


def device_figure(
    rows: pd.DataFrame, metrics: list[str], events: pd.DataFrame, incidents: pd.DataFrame, first_metrics: list[str]
) -> dict:
    """The anomaly score and each metric over time, one panel each on a shared time axis; the
    flagged rows (``events``, as stored in the results database) marked in red on every panel;
    the device's and its cohort's incidents shaded."""
    ordered = [m for m in first_metrics if m in metrics] + [m for m in metrics if m not in first_metrics]
    titles = ["anomaly score"] + [metric_words(m) for m in ordered]
    panels = len(titles)
    height = 200 + 120 * len(ordered)
    layout = _base_layout(height)
    layout["margin"]["t"] = 60
    layout["legend"]["y"] = 1 + 30 / (height - 100)  # above the first panel's title
    step = (1.0 - PANEL_GAP * (panels - 1)) / panels
    annotations = []
    for index, title in enumerate(titles):
        top = 1.0 - index * (step + PANEL_GAP)
        suffix = "" if index == 0 else str(index + 1)
        layout[f"yaxis{suffix}"] = {"domain": [top - step, top], "anchor": f"x{suffix}", "zeroline": False, "gridcolor": "#eee"}
        layout[f"xaxis{suffix}"] = {
            "anchor": f"y{suffix}", "type": "date", "gridcolor": "#eee",
            **({} if index == 0 else {"matches": "x"}), "showticklabels": index == panels - 1,
        }  # fmt: skip
        annotations.append({
            "text": title, "xref": "paper", "yref": "paper", "x": 0.5, "y": top, "xanchor": "center",
            "yanchor": "bottom", "showarrow": False, "font": {"size": 11},
        })  # fmt: skip
    layout["annotations"] = annotations
    data = []
    times = _times(rows["timestamp"]) if len(rows) else []
    if len(rows) and "score" in rows:
        data.append({"type": "scatter", "mode": "lines", "name": "score", "x": times,
                     "y": _values(rows["score"]), "line": {"color": "#4a6fa5", "width": 1}})  # fmt: skip
    if len(events):
        data.append({
            "type": "scatter", "mode": "markers", "name": ANOMALY_TRACE, "legendgroup": ANOMALY_TRACE,
            "x": _times(events["timestamp"]), "y": _values(events["score"]), "marker": {"color": "#d62728", "size": 6},
            "text": [f"severity {s:.1f}<br>{describe_feature(f)}" for s, f in zip(events["severity"], events["top_feature_1"], strict=True)],
            "hovertemplate": "%{x}<br>score %{y:.3f}<br>%{text}<extra></extra>",
        })  # fmt: skip
    flagged = rows.loc[rows["timestamp"].isin(events["timestamp"])] if len(events) and len(rows) else rows.iloc[0:0]
    faulty = rows["is_injected_anomaly"].astype("boolean").fillna(False).astype(bool) if "is_injected_anomaly" in rows else None
    faults = rows.loc[faulty] if faulty is not None else rows.iloc[0:0]
    for index, metric in enumerate(ordered, start=2):
        axes = {"xaxis": f"x{index}", "yaxis": f"y{index}"}
        words = metric_words(metric)
        data.append({"type": "scatter", "mode": "lines", "name": metric, "showlegend": False, **axes,
                     "x": times, "y": _values(rows[metric]), "line": {"color": "#555", "width": 1},
                     "hovertemplate": f"%{{x}}<br>{words} %{{y}}<extra></extra>"})  # fmt: skip
        if len(flagged):
            data.append({"type": "scatter", "mode": "markers", "name": ANOMALY_TRACE, "legendgroup": ANOMALY_TRACE,
                         "showlegend": False, **axes, "x": _times(flagged["timestamp"]), "y": _values(flagged[metric]),
                         "marker": {"color": "#d62728", "size": 4}, "hoverinfo": "skip"})  # fmt: skip
        if len(faults):
            data.append({"type": "scatter", "mode": "markers", "name": FAULT_TRACE, "legendgroup": FAULT_TRACE,
                         "showlegend": index == 2, **axes, "x": _times(faults["timestamp"]), "y": _values(faults[metric]),
                         "marker": {"symbol": "line-ns-open", "color": "#2ca02c", "size": 7}, "hoverinfo": "skip"})  # fmt: skip
    # One shape per incident over the whole height: the panels share their time axis.
    layout["shapes"] = [
        {
            "type": "rect", "xref": "x", "yref": "paper", "y0": 0, "y1": 1, "line": {"width": 0}, "layer": "below",
            "x0": incident.started_at.isoformat(),
            "x1": (incident.ended_at if pd.notna(incident.ended_at) else incident.last_anomaly_at).isoformat(),
            "fillcolor": INCIDENT_COLOURS.get(incident.kind, "rgba(0,0,0,0.1)"),
        }
        for incident in incidents.itertuples()
    ]  # fmt: skip
    for kind, colour in LEGEND_COLOURS.items():  # legend entries for the shaded spans
        if len(incidents) and (incidents["kind"] == kind).any():
            data.append({"type": "scatter", "mode": "markers", "name": f"{kind} incident", "x": [None], "y": [None],
                         "marker": {"symbol": "square", "size": 12, "color": colour}})  # fmt: skip
    return {"data": data, "layout": layout}


def hourly_figure(per_hour: pd.DataFrame) -> dict:
    """Flagged rows per hour and cohort as a heatmap: a cohort-wide regression is one bright row."""
    if per_hour.empty:
        return {"data": [], "layout": _base_layout(200)}
    table = per_hour.pivot_table(index="cohort", columns="hour", values="anomalies", aggfunc="sum", fill_value=0)
    devices = per_hour.pivot_table(index="cohort", columns="hour", values="devices", aggfunc="sum", fill_value=0)
    table = table.reindex(columns=range(24), fill_value=0)
    devices = devices.reindex(index=table.index, columns=range(24), fill_value=0)
    layout = _base_layout(160 + 26 * len(table))
    layout["margin"]["l"] = 200
    layout["xaxis"] = {"title": {"text": "hour (UTC)"}}
    layout["yaxis"] = {"automargin": True}
    return {
        "data": [{
            "type": "heatmap", "z": table.to_numpy().tolist(), "x": [f"{h:02d}:00" for h in range(24)],
            "y": [str(c) for c in table.index], "customdata": devices.to_numpy().tolist(), "colorscale": "Reds",
            "colorbar": {"title": {"text": "flagged rows"}},
            "hovertemplate": "%{y}<br>%{x} UTC<br>%{z} flagged rows on %{customdata} devices<extra></extra>",
        }],
        "layout": layout,
    }  # fmt: skip


def to_json(figure: dict) -> str:
    # '</' cannot end the <script> element the figure is embedded in.
    return json.dumps(figure, cls=PlotlyJSONEncoder).replace("</", "<\\/")
