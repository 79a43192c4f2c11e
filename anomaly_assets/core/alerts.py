"""Alert channels and messages: the channels file, severity filters, payloads (no I/O, no Dagster).

The channels file (YAML or JSON) is a list of channels, or a mapping with a ``channels`` list::

    channels:
      - name: ops-webhook          # unique; the delivery log's key together with the incident id
        type: webhook              # webhook | slack | email
        url_env: OPS_WEBHOOK_URL   # or url: ... (secrets belong in the environment: *_env keys)
        headers: {X-Team: fleet}
        min_severity: medium       # low | medium | high | critical
        kinds: [device, cohort]
        rate_limit_per_hour: 20    # individual alerts per hour; the rest go out as one digest
        retries: 3                 # extra attempts per message, with exponential backoff
        backoff_seconds: 1.0
        timeout_seconds: 10
      - name: fleet-slack
        type: slack
        url_env: SLACK_WEBHOOK_URL
      - name: oncall-mail
        type: email
        smtp_host: smtp.example.com
        smtp_port: 587
        starttls: true
        username_env: SMTP_USERNAME
        password_env: SMTP_PASSWORD
        sender: fleet-alerts@example.com
        recipients: [oncall@example.com]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import yaml

from anomaly_assets.core.incident_rules import SEVERITY_LEVELS, severity_rank

CHANNEL_TYPES = ("webhook", "slack", "email")
KINDS = ("device", "cohort")
DIGEST_LIST_LIMIT = 50
UNFOLDED = SMTP.clone(max_line_length=998)  # long subjects stay on one line (RFC 5322 allows 998)
SEVERITY_EMOJI = {"low": ":large_blue_circle:", "medium": ":large_yellow_circle:", "high": ":large_orange_circle:", "critical": ":red_circle:"}


class ChannelConfigError(ValueError):
    """The channels file is unreadable or a channel is misconfigured; the message says where."""


@dataclasses.dataclass(frozen=True)
class ChannelConfig:
    name: str
    type: str
    min_severity: str = "low"
    kinds: tuple[str, ...] = KINDS
    rate_limit_per_hour: int | None = None
    retries: int = 3
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    timeout_seconds: float = 10.0
    enabled: bool = True
    # webhook / slack
    url: str | None = None
    url_env: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    # email
    smtp_host: str | None = None
    smtp_port: int = 25
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    username_env: str | None = None
    password_env: str | None = None
    sender: str | None = None
    recipients: tuple[str, ...] = ()

    def accepts(self, incident: Mapping[str, Any]) -> bool:
        return incident.get("kind") in self.kinds and severity_rank(str(incident["severity_level"])) >= severity_rank(self.min_severity)

    def resolve_url(self, environ: Mapping[str, str]) -> str:
        if self.url:
            return self.url
        value = environ.get(self.url_env or "")
        if not value:
            raise ChannelConfigError(f"channel {self.name!r}: environment variable {self.url_env} (url_env) is not set")
        return value

    def credentials(self, environ: Mapping[str, str]) -> tuple[str, str] | None:
        username = self.username or (environ.get(self.username_env) if self.username_env else None)
        if not self.password_env:
            return None
        password = environ.get(self.password_env)
        if password is None:
            raise ChannelConfigError(f"channel {self.name!r}: environment variable {self.password_env} (password_env) is not set")
        if not username:
            raise ChannelConfigError(f"channel {self.name!r}: password_env is set but no username or username_env")
        return username, password


_FIELDS = {f.name for f in dataclasses.fields(ChannelConfig)}


def _channel(raw: Any, position: int, where: str) -> ChannelConfig:
    label = f"{where}: channel #{position}"
    if not isinstance(raw, Mapping):
        raise ChannelConfigError(f"{label} must be a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    if not name or not isinstance(name, str):
        raise ChannelConfigError(f"{label} has no 'name'")
    label = f"{where}: channel {name!r}"
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ChannelConfigError(f"{label}: unknown keys {unknown}; known keys: {sorted(_FIELDS)}")
    values = dict(raw)
    if values.get("type") not in CHANNEL_TYPES:
        raise ChannelConfigError(f"{label}: type {values.get('type')!r} is not one of {CHANNEL_TYPES}")
    if values.get("min_severity", "low") not in SEVERITY_LEVELS:
        raise ChannelConfigError(f"{label}: min_severity {values.get('min_severity')!r} is not one of {SEVERITY_LEVELS}")
    kinds = values.get("kinds", KINDS)
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds or set(kinds) - set(KINDS):
        raise ChannelConfigError(f"{label}: kinds {list(kinds)} must be a non-empty subset of {KINDS}")
    values["kinds"] = kinds
    values["headers"] = tuple(sorted((str(k), str(v)) for k, v in (values.get("headers") or {}).items()))
    recipients = values.get("recipients", ())
    values["recipients"] = (recipients,) if isinstance(recipients, str) else tuple(recipients)
    try:
        channel = ChannelConfig(**values)
    except TypeError as error:
        raise ChannelConfigError(f"{label}: {error}") from error
    numbers = {
        "retries": channel.retries,
        "backoff_seconds": channel.backoff_seconds,
        "timeout_seconds": channel.timeout_seconds,
    }
    bad = [f"{k}={v!r}" for k, v in numbers.items() if not isinstance(v, (int, float)) or v < 0]
    if channel.rate_limit_per_hour is not None and (not isinstance(channel.rate_limit_per_hour, int) or channel.rate_limit_per_hour < 0):
        bad.append(f"rate_limit_per_hour={channel.rate_limit_per_hour!r}")
    if bad:
        raise ChannelConfigError(f"{label}: {', '.join(bad)} must be non-negative numbers")
    if channel.type in ("webhook", "slack") and not (channel.url or channel.url_env):
        raise ChannelConfigError(f"{label}: a {channel.type} channel needs 'url' or 'url_env'")
    if channel.type == "email":
        missing = [k for k in ("smtp_host", "sender") if not getattr(channel, k)]
        if not channel.recipients:
            missing.append("recipients")
        if missing:
            raise ChannelConfigError(f"{label}: an email channel needs {missing}")
    return channel


def parse_channels(text: str, where: str = "alert channels") -> list[ChannelConfig]:
    """Channels from YAML or JSON text (JSON is YAML); ``where`` names the source in errors."""
    try:
        document = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
        raise ChannelConfigError(f"{where} is not valid YAML/JSON: {error}") from error
    if document is None:
        return []
    raw = document.get("channels", []) if isinstance(document, Mapping) else document
    if isinstance(document, Mapping) and set(document) - {"channels"}:
        raise ChannelConfigError(f"{where}: unknown top-level keys {sorted(set(document) - {'channels'})}; expected 'channels'")
    if not isinstance(raw, list):
        raise ChannelConfigError(f"{where}: 'channels' must be a list, got {type(raw).__name__}")
    channels = [_channel(item, i, where) for i, item in enumerate(raw, start=1)]
    names = [c.name for c in channels]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ChannelConfigError(f"{where}: channel names must be unique, repeated: {duplicates}")
    return [c for c in channels if c.enabled]


def load_channels(source: str | None) -> list[ChannelConfig]:
    """``source``: empty (no channels), inline JSON/YAML starting with '[' or '{', or a file path."""
    if not source or not source.strip():
        return []
    stripped = source.strip()
    if stripped[0] in "[{":
        return parse_channels(stripped, "alert channels (inline)")
    path = Path(stripped).expanduser()
    if not path.is_file():
        raise ChannelConfigError(f"alert channels file {path} does not exist (set by ANOMALY_ASSETS_ALERT_CHANNELS)")
    return parse_channels(path.read_text(), f"alert channels file {path}")


# --------------------------------------------------------------------------------------------
# messages


def _when(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    text = str(value)
    if text in ("NaT", "None", "nan"):
        return "-"
    if hasattr(value, "isoformat"):
        text = value.isoformat()
    return text.replace("+00:00", "Z")


def subject_of(incident: Mapping[str, Any]) -> str:
    if incident["kind"] == "cohort":
        return f"cohort {incident['cohort']}"
    return f"device {incident['device_id']}"


def title(incident: Mapping[str, Any]) -> str:
    level = str(incident["severity_level"]).upper()
    what = f"{incident['kind']} incident on {subject_of(incident)}"
    if incident["kind"] == "cohort":
        what += f" ({incident['devices']} devices, peak share {float(incident['peak_share'] or 0):.0%})"
    elif incident.get("cohort"):
        what += f" ({incident['cohort']})"
    return f"[{level}] {what}"


def incident_summary(incident: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-safe fields every channel shows."""
    keys = (
        "incident_id", "kind", "device_id", "cohort", "status", "severity_level", "max_severity",
        "mean_severity", "max_score", "started_at", "last_anomaly_at", "ended_at", "samples",
        "anomalous_samples", "devices", "cohort_devices", "peak_share", "device_ids", "top_features",
        "first_partition", "last_partition", "model_name", "model_version",
    )  # fmt: skip
    out: dict[str, Any] = {}
    for key in keys:
        value = incident.get(key)
        if key.endswith("_at"):
            value = None if _when(value) == "-" else _when(value)
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            value = value.item() if hasattr(value, "item") else str(value)
        if isinstance(value, float) and value != value:
            value = None
        out[key] = value
    return out


def webhook_payload(incident: Mapping[str, Any], link: str, explorer_link: str | None = None) -> dict[str, Any]:
    payload = {"type": "incident", "title": title(incident), "incident": incident_summary(incident), "dagster_url": link}
    if explorer_link:
        payload["explorer_url"] = explorer_link
    return payload


def slack_payload(incident: Mapping[str, Any], link: str, explorer_link: str | None = None) -> dict[str, Any]:
    """A Slack incoming-webhook message in Block Kit, with ``text`` as the notification fallback."""
    summary = incident_summary(incident)
    level = summary["severity_level"]
    subject = f"`{summary['device_id']}`" if summary["kind"] == "device" else f"`{summary['cohort']}`"
    fields = [
        f"*Severity*\n{SEVERITY_EMOJI.get(level, '')} {level} ({summary['max_severity']:.0f}/100)",
        f"*{'Device' if summary['kind'] == 'device' else 'Cohort'}*\n{subject}",
        f"*Started*\n{summary['started_at']}",
        f"*Status*\n{summary['status']}" + (f" (ended {summary['ended_at']})" if summary["ended_at"] else ""),
    ]
    if summary["kind"] == "device":
        fields.append(f"*Cohort*\n{summary['cohort'] or '-'}")
    else:
        fields.append(f"*Devices flagged*\n{summary['devices']} of {summary['cohort_devices']} (peak {summary['peak_share']:.0%})")
    fields.append(f"*Anomalous samples*\n{summary['anomalous_samples']} of {summary['samples']}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title(incident)[:150], "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": text} for text in fields]},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Top features*: {summary['top_features'] or '-'}"}},
    ]
    if summary["kind"] == "cohort" and summary["device_ids"]:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Devices*: {summary['device_ids'][:2900]}"}})
    blocks += [
        {
            "type": "actions",
            "elements": (
                [{"type": "button", "text": {"type": "plain_text", "text": "Open in the explorer"}, "url": explorer_link}]
                if explorer_link
                else []
            )
            + [{"type": "button", "text": {"type": "plain_text", "text": "Open in Dagster"}, "url": link}],
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"incident `{summary['incident_id']}` · model {summary['model_name']} v{summary['model_version']} · partition {summary['last_partition']}",
                }
            ],
        },
    ]
    return {"text": title(incident), "blocks": blocks}


def email_message(
    incident: Mapping[str, Any], link: str, channel: ChannelConfig, explorer_link: str | None = None
) -> EmailMessage:
    summary = incident_summary(incident)
    lines = [title(incident), ""] + [f"{key}: {'-' if value is None else value}" for key, value in summary.items()]
    lines += [""] + ([f"Explorer: {explorer_link}"] if explorer_link else []) + [f"Dagster: {link}"]
    return _email(f"[anomaly_assets] {title(incident)}", "\n".join(lines), channel)


def digest_id(channel: str, incident_ids: Sequence[str]) -> str:
    return hashlib.sha256(f"{channel}|{','.join(sorted(incident_ids))}".encode()).hexdigest()[:24]


def _digest_lines(incidents: Sequence[Mapping[str, Any]], max_chars: int | None = None) -> list[str]:
    """One line per incident (at most DIGEST_LIST_LIMIT, and whole lines within ``max_chars``), then the rest as a count."""
    lines: list[str] = []
    used = 40  # room for the closing "and N more" line
    for incident in incidents[:DIGEST_LIST_LIMIT]:
        line = f"- {title(incident)} since {_when(incident.get('started_at'))} [{incident['incident_id']}]"
        if max_chars is not None and used + len(line) + 1 > max_chars:
            break
        lines.append(line)
        used += len(line) + 1
    if len(incidents) > len(lines):
        lines.append(f"- ... and {len(incidents) - len(lines)} more")
    return lines


def digest_title(incidents: Sequence[Mapping[str, Any]], channel: ChannelConfig) -> str:
    levels = {level: sum(1 for i in incidents if i["severity_level"] == level) for level in reversed(SEVERITY_LEVELS)}
    counts = ", ".join(f"{n} {level}" for level, n in levels.items() if n)
    return f"Digest: {len(incidents)} more incidents over the rate limit of {channel.rate_limit_per_hour}/h ({counts})"


def digest_payload(incidents: Sequence[Mapping[str, Any]], channel: ChannelConfig, link: str) -> dict[str, Any]:
    if channel.type == "slack":
        text = "\n".join(_digest_lines(incidents, max_chars=2900))  # Slack: at most 3000 characters per text
        return {
            "text": digest_title(incidents, channel),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": digest_title(incidents, channel)[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open in Dagster"}, "url": link}]},
            ],
        }
    return {
        "type": "digest",
        "title": digest_title(incidents, channel),
        "count": len(incidents),
        "incidents": [incident_summary(i) for i in incidents],
        "dagster_url": link,
    }


def digest_email(incidents: Sequence[Mapping[str, Any]], channel: ChannelConfig, link: str) -> EmailMessage:
    body = "\n".join([digest_title(incidents, channel), "", *_digest_lines(incidents), "", f"Dagster: {link}"])
    return _email(f"[anomaly_assets] {digest_title(incidents, channel)}", body, channel)


def _email(subject: str, body: str, channel: ChannelConfig) -> EmailMessage:
    message = EmailMessage(policy=UNFOLDED)
    message["Subject"] = subject
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.recipients)
    message.set_content(body)
    return message


def payload_bytes(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, default=str).encode()
