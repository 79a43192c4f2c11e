"""The promotion gate: compare a challenger with the champion on the same rows (shadow scoring)
and decide, with reasons, whether the challenger may become champion."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import pandas as pd

from anomaly_assets.core.metrics import (
    alerts_per_1000_devices_per_day,
    classification_metrics,
    event_f1,
    population_stability_index,
)


@dataclasses.dataclass(frozen=True)
class GateConfig:
    # With labels: the challenger may be this much worse than the champion and still pass.
    max_auc_pr_drop: float = 0.02
    max_event_f1_drop: float = 0.02
    # Always: the challenger may raise alert events per 1,000 devices per day by at most this
    # factor over the champion, and stay under an absolute budget when one is set.
    max_alert_increase: float = 1.25
    max_alerts_per_1000_devices_per_day: float | None = None
    # Without labels: flagged-row share budget and score-distribution stability (PSI).
    max_alert_rate: float = 0.05
    max_score_psi: float = 0.25


GATE_COLUMNS = ["device_id", "timestamp", "score", "is_anomaly"]  # what the gate reads of a model's scores


@dataclasses.dataclass
class ShadowScores:
    """Both models' scores on the same rows, sorted by device and time, with their labels."""

    challenger: pd.DataFrame
    champion: pd.DataFrame
    labels: np.ndarray | None


def shadow_score(chunks: Iterable[pd.DataFrame], challenger, champion, keep, label_column: str | None) -> ShadowScores:
    """Score the kept rows (``keep(chunk)``: a row mask) of each chunk of whole devices with both
    models, a chunk at a time, keeping only the columns the gate reads: memory follows the chunk
    and the kept rows, not the partition. Chunks come in ascending device order."""
    challenger_parts, champion_parts, label_parts = [], [], []
    for chunk in chunks:
        rows = chunk.loc[keep(chunk)].sort_values(["device_id", "timestamp"], ignore_index=True)
        if rows.empty:
            continue
        challenger_parts.append(challenger.score(rows)[GATE_COLUMNS])
        champion_parts.append(champion.score(rows)[GATE_COLUMNS])
        label_parts.append(rows[label_column].to_numpy(dtype=bool) if label_column and label_column in rows else None)
    if not challenger_parts:
        empty = pd.DataFrame(columns=GATE_COLUMNS)
        return ShadowScores(empty, empty.copy(), None)
    labelled = all(part is not None for part in label_parts)
    return ShadowScores(
        pd.concat(challenger_parts, ignore_index=True),
        pd.concat(champion_parts, ignore_index=True),
        np.concatenate(label_parts) if labelled else None,
    )


@dataclasses.dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]
    challenger: dict[str, float]
    champion: dict[str, float]


def unseen_rows(features: pd.DataFrame, *training_summaries: dict) -> np.ndarray:
    """Mask of the rows no model saw while training: later than every model's last fitting or
    threshold row (``validation_end`` of its training summary). A model without one saw nothing
    of these rows' period as far as anyone can tell: only the others bound the mask."""
    ends = [pd.Timestamp(s["validation_end"]) for s in training_summaries if s.get("validation_end")]
    if not ends:
        return np.ones(len(features), dtype=bool)
    last = max(e.tz_localize("UTC") if e.tzinfo is None else e for e in ends)
    return (features["timestamp"] > last).to_numpy()


def model_quality(scored: pd.DataFrame, threshold_flags: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    """Quality of one model's scores on rows sorted by device and time."""
    devices = scored["device_id"].to_numpy()
    quality = {
        "alert_rate": float(np.mean(threshold_flags)),
        "alerts_per_1000_devices_per_day": alerts_per_1000_devices_per_day(threshold_flags, devices, scored["timestamp"]),
    }
    if labels is not None and 0 < labels.sum() < len(labels):
        metrics = classification_metrics(labels, scored["score"].to_numpy(), threshold=np.inf)
        quality["auc_pr"] = metrics["auc_pr"]
        quality["auc_roc"] = metrics["auc_roc"]
        quality.update(event_f1(labels, threshold_flags, devices))
    return quality


def evaluate_gate(
    challenger_scored: pd.DataFrame,
    champion_scored: pd.DataFrame,
    labels: np.ndarray | None,
    config: GateConfig = GateConfig(),
) -> GateDecision:
    """Both frames hold the same rows in the same order (device, time)."""
    if len(challenger_scored) != len(champion_scored) or not (
        challenger_scored["device_id"].to_numpy() == champion_scored["device_id"].to_numpy()
    ).all():
        raise ValueError("challenger and champion must be scored on the same rows in the same order")
    challenger = model_quality(challenger_scored, challenger_scored["is_anomaly"].to_numpy(), labels)
    champion = model_quality(champion_scored, champion_scored["is_anomaly"].to_numpy(), labels)
    reasons: list[str] = []
    passed = True

    def require(condition: bool, ok: str, failed: str) -> None:
        nonlocal passed
        passed &= condition
        reasons.append(("pass: " + ok) if condition else ("fail: " + failed))

    rate, baseline = challenger["alerts_per_1000_devices_per_day"], champion["alerts_per_1000_devices_per_day"]
    allowed = config.max_alert_increase * baseline
    require(
        rate <= allowed,
        f"{rate:.1f} alerts/1000 devices/day vs champion {baseline:.1f}",
        f"{rate:.1f} alerts/1000 devices/day exceeds {config.max_alert_increase}x champion's {baseline:.1f}",
    )
    budget = config.max_alerts_per_1000_devices_per_day
    if budget is not None:
        require(rate <= budget, f"{rate:.1f} alerts/1000 devices/day within budget {budget}", f"{rate:.1f} alerts/1000 devices/day over budget {budget}")
    if "auc_pr" in challenger and "auc_pr" in champion:
        drop = champion["auc_pr"] - challenger["auc_pr"]
        require(
            drop <= config.max_auc_pr_drop,
            f"AUC-PR {challenger['auc_pr']:.4f} vs champion {champion['auc_pr']:.4f}",
            f"AUC-PR {challenger['auc_pr']:.4f} is {drop:.4f} below champion {champion['auc_pr']:.4f} (max drop {config.max_auc_pr_drop})",
        )
        drop = champion["event_f1"] - challenger["event_f1"]
        require(
            drop <= config.max_event_f1_drop,
            f"event F1 {challenger['event_f1']:.4f} vs champion {champion['event_f1']:.4f}",
            f"event F1 {challenger['event_f1']:.4f} is {drop:.4f} below champion {champion['event_f1']:.4f} (max drop {config.max_event_f1_drop})",
        )
    else:
        alert_rate = challenger["alert_rate"]
        require(
            alert_rate <= config.max_alert_rate,
            f"alert rate {alert_rate:.4f} within {config.max_alert_rate}",
            f"alert rate {alert_rate:.4f} over budget {config.max_alert_rate}",
        )
        psi = population_stability_index(champion_scored["score"].to_numpy(), challenger_scored["score"].to_numpy())
        challenger["score_psi_vs_champion"] = psi
        require(
            psi <= config.max_score_psi,
            f"score distribution stable (PSI {psi:.3f} <= {config.max_score_psi})",
            f"score distribution shifted (PSI {psi:.3f} > {config.max_score_psi})",
        )
    return GateDecision(passed=passed, reasons=reasons, challenger=challenger, champion=champion)
