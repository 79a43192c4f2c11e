"""The audit trail in the results database: record a change, read the trail.

Every champion change (gate, first version, CLI, jobs), every retention run that deletes or
archives, and every change of the alert channels configuration is one ``audit_log`` row: who
(``anomaly_assets.core.audit.Actor``), when, what and why. Text is redacted before it is stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import sqlalchemy as sa

from anomaly_assets.core.audit import ACTIONS, Actor, champion_change, channels_fingerprint
from anomaly_assets.redaction import redact
from anomaly_assets.resources.results_store import ResultsOperations, audit_log

CHAMPION_ACTIONS = {"promote": "champion.promote", "rollback": "champion.rollback"}


def record(
    store: ResultsOperations, actor: Actor, action: str, subject: str, detail: str, reason: str | None = None
) -> dict:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; known: {ACTIONS}")
    row = {
        "at": dt.datetime.now(dt.UTC),
        "who": redact(actor.who)[:256],
        "via": actor.via,
        "action": action,
        "subject": redact(subject)[:512],
        "detail": redact(detail),
        "reason": redact(reason) if reason else None,
        "run_id": actor.run_id,
    }
    with store.engine.begin() as connection:
        connection.execute(audit_log.insert().values(**row))
    return row


def record_champion_change(store: ResultsOperations, actor: Actor, entry: Mapping[str, str], action: str | None = None) -> dict:
    """One row for a champion-history entry (``MlflowModelRegistry.set_champion``'s return)."""
    subject, detail = champion_change(entry)
    action = action or CHAMPION_ACTIONS.get(entry.get("action", ""), "champion.promote")
    return record(store, actor, action, subject, detail, entry.get("reason"))


def record_channels_if_changed(store: ResultsOperations, actor: Actor, channels: list) -> dict | None:
    """Record the alert channels when their configuration differs from the last one recorded."""
    digest, description = channels_fingerprint(channels)
    last = entries(store, action="alert_channels.change", limit=1)
    if (last and last[-1]["subject"].endswith(digest)) or (not last and not channels):
        return None
    previous = last[-1]["subject"].rsplit(" ", 1)[-1] if last else "none"
    return record(
        store, actor, "alert_channels.change", f"alert channels {digest}", description,
        f"configuration changed (previous fingerprint {previous}); first used by this run",
    )  # fmt: skip


def entries(store: ResultsOperations, action: str | None = None, limit: int = 200) -> list[dict]:
    """The newest ``limit`` rows (of one action, or prefix such as ``champion``), oldest first."""
    query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if action:
        query = query.where(audit_log.c.action.startswith(action))
    with store.engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(query)]
    return rows[::-1]
