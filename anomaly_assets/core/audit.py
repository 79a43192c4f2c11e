"""Who did what: the actor of a change (CLI user, a Dagster run's launcher, the proxy's user), the
alert channels' fingerprint, and the audit trail as text (no I/O, no Dagster).

A change is recorded with ``who`` (a person or the automation that acted), ``via`` (cli, dagster,
web), ``action`` (one of ``ACTIONS``), ``subject``, ``detail`` (what changed) and ``reason`` (why).
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import os
from collections.abc import Mapping, Sequence

# Actions the trail records; the explorer and `anomaly-assets audit` filter by them.
ACTIONS = (
    "champion.gate",  # the promotion gate moved the champion after a training run
    "champion.first",  # the first trained version became champion
    "champion.promote",  # a manual promotion (CLI or promote_model_job)
    "champion.rollback",  # a rollback (CLI or rollback_model_job)
    "retention.run",  # retention_job deleted results / archived versions (not a dry run)
    "alert_channels.change",  # the alert channels configuration differs from the last one recorded
)
# A run tag naming the person who launched it. Set by the webserver behind the proxy (the proxy's
# authenticated user, see anomaly_assets/webserver.py) or by whoever launches through the API.
LAUNCHED_BY_TAG = "anomaly_assets/launched_by"
# Tags Dagster itself (or Dagster+) sets on runs it starts, in the order they name the launcher.
_LAUNCHER_TAGS = (
    (LAUNCHED_BY_TAG, "{}"),
    ("dagster/user", "{}"),
    ("user", "{}"),
    ("dagster/schedule_name", "schedule {}"),
    ("dagster/sensor_name", "sensor {}"),
    ("dagster/backfill", "backfill {}"),
)
UNKNOWN_LAUNCHER = "unknown launcher (no user tag on the run)"
PROXY_USER_HEADER = "X-Forwarded-User"


@dataclasses.dataclass(frozen=True)
class Actor:
    who: str
    via: str  # cli | dagster | web
    run_id: str | None = None

    def label(self) -> str:
        """How the MLflow champion history names the actor: ``alice (cli)``, ``bob (dagster run 1a2b3c4d)``."""
        where = f"dagster run {self.run_id[:8]}" if self.run_id else self.via
        return f"{self.who} ({where})"


def cli_actor(environ: Mapping[str, str] | None = None) -> Actor:
    """The OS user running the command (``ANOMALY_ASSETS_ACTOR`` names someone else, e.g. in a
    container where every operator is the same unprivileged user)."""
    env = os.environ if environ is None else environ
    named = (env.get("ANOMALY_ASSETS_ACTOR") or "").strip()
    if named:
        return Actor(named, "cli")
    try:
        return Actor(getpass.getuser(), "cli")
    except (KeyError, OSError):  # a container's uid with no passwd entry
        return Actor(f"uid {os.getuid()}", "cli")


def run_launcher(tags: Mapping[str, str]) -> str:
    """Who launched a Dagster run, from its tags: the user tag, else the schedule, sensor or backfill."""
    for key, template in _LAUNCHER_TAGS:
        value = (tags.get(key) or "").strip()
        if value:
            return template.format(value)
    return UNKNOWN_LAUNCHER


def run_actor(run_id: str, tags: Mapping[str, str]) -> Actor:
    return Actor(run_launcher(tags), "dagster", run_id)


def champion_change(entry: Mapping[str, str]) -> tuple[str, str]:
    """``(subject, detail)`` of a champion-history entry: which model versions, from and to."""
    return "champion", f"version {entry.get('previous') or '-'} -> {entry['version']}"


def channels_fingerprint(channels: Sequence[object]) -> tuple[str, str]:
    """A digest of the alert channels' whole configuration and a description without secrets
    (names, types, filters, and which environment variables hold the URLs and passwords)."""
    described = []
    full = []
    for channel in channels:
        fields = dataclasses.asdict(channel)
        full.append(fields)
        shown = {
            key: value
            for key, value in fields.items()
            if key in ("name", "type", "min_severity", "kinds", "rate_limit_per_hour", "enabled", "url_env",
                       "password_env", "username_env", "smtp_host", "recipients")
            and value not in (None, (), [])
        }  # fmt: skip
        if fields.get("url"):
            shown["url"] = "(inline, not shown)"
        if fields.get("headers"):
            shown["headers"] = sorted(name for name, _ in fields["headers"])
        described.append(shown)
    digest = hashlib.sha256(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return digest, json.dumps(described, sort_keys=True, default=list)


def format_entries(entries: Sequence[Mapping[str, object]]) -> str:
    """The trail as ``anomaly-assets audit`` prints it, oldest first."""
    if not entries:
        return "audit trail: empty (no champion change, retention run or alert-channel change recorded yet)"
    lines = ["audit trail (oldest first):"]
    for e in entries:
        run = f" run {str(e['run_id'])[:8]}" if e.get("run_id") else ""
        lines.append(f"  {_stamp(e['at'])}  {e['action']:<22} {e['who']} via {e['via']}{run}")
        lines.append(f"      {e['subject']}: {e['detail']}" + (f"  (why: {e['reason']})" if e.get("reason") else ""))
    return "\n".join(lines)


def _stamp(value: object) -> str:
    text = value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else str(value)
    return text.replace("+00:00", "Z")
