"""AlertRouter: sends incidents to the configured channels, exactly once per (incident, channel).

Channels come from ``ANOMALY_ASSETS_ALERT_CHANNELS``: a YAML/JSON file path or inline JSON (see
``anomaly_assets.core.alerts``); secrets (webhook URLs, SMTP passwords) only through the
environment variables the file names. Per channel: severity and kind filter, then a rate limit
(individual alerts per rolling hour, counted from the delivery log, so it holds across runs);
incidents over the limit go out as one digest per run. Every message is retried with exponential
backoff; what still fails is recorded as ``failed`` and retried by the next run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from email.message import EmailMessage
from typing import Any

import dagster as dg
import pandas as pd
import requests
import sqlalchemy as sa

from anomaly_assets.core import alerts
from anomaly_assets.core.alerts import ChannelConfig
from anomaly_assets.core.incident_rules import severity_rank
from anomaly_assets.redaction import redact, redact_webhook, url_secrets
from anomaly_assets.explorer import links
from anomaly_assets.resources.incident_store import DeliveryLog

CHANNELS_ENV = "ANOMALY_ASSETS_ALERT_CHANNELS"
UI_URL_ENV = "DAGSTER_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:3000"
RETRYABLE_HTTP = (408, 425, 429, 500, 502, 503, 504)


class DeliveryError(RuntimeError):
    """A message could not be delivered after its retries; the message names channel and cause."""


@dataclasses.dataclass
class ChannelReport:
    channel: str
    type: str
    delivered: int = 0
    digested: int = 0
    digests_sent: int = 0
    suppressed: int = 0
    filtered: int = 0
    already_done: int = 0
    failed: int = 0
    rate_limited: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class DeliveryReport:
    channels: list[ChannelReport]

    def total(self, field: str) -> int:
        return sum(getattr(c, field) for c in self.channels)

    def table(self) -> pd.DataFrame:
        rows = [{k: v for k, v in dataclasses.asdict(c).items() if k != "errors"} for c in self.channels]
        return pd.DataFrame(rows)


class AlertRouter(dg.ConfigurableResource):
    """``channels``: path to a YAML/JSON channels file, or inline JSON; empty means no channels."""

    channels: str = ""
    dagster_ui_url: str = DEFAULT_UI_URL
    # The anomaly explorer (ANOMALY_ASSETS_EXPLORER_URL): messages link each incident's page there.
    explorer_url: str = ""
    stale_claim_minutes: float = 15.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlertRouter:
        env = os.environ if environ is None else environ
        return cls(
            channels=env.get(CHANNELS_ENV, ""),
            dagster_ui_url=env.get(UI_URL_ENV, DEFAULT_UI_URL),
            explorer_url=links.explorer_url(env) or "",
        )

    def channel_configs(self) -> list[ChannelConfig]:
        return alerts.load_channels(self.channels)

    def asset_url(self, asset: str = "device_incidents") -> str:
        return f"{self.dagster_ui_url.rstrip('/')}/assets/{asset}"

    def incident_url(self, incident: Mapping[str, Any]) -> str | None:
        """The incident's page in the anomaly explorer, when its address is configured."""
        return links.incident_page(self.explorer_url.rstrip("/"), incident["incident_id"]) if self.explorer_url else None

    # ---------------------------------------------------------------------------------------
    # sending one message, with retries

    def _with_retries(self, channel: ChannelConfig, send: Callable[[], None], sleep: Callable[[float], None]) -> int:
        """Run ``send`` up to 1 + retries times; returns the attempts used or raises DeliveryError."""
        errors = []
        for attempt in range(channel.retries + 1):
            try:
                send()
                return attempt + 1
            except (_Permanent, alerts.ChannelConfigError) as error:  # retrying cannot fix these
                errors.append(str(error))
                break
            except Exception as error:  # network errors, 5xx, SMTP errors: retry
                errors.append(f"{type(error).__name__}: {error}")
            if attempt < channel.retries:
                sleep(min(channel.backoff_seconds * (2**attempt), channel.max_backoff_seconds))
        detail = redact(errors[-1], _channel_secrets(channel))
        raise DeliveryError(f"channel {channel.name!r} ({channel.type}) failed after {len(errors)} attempt(s): {detail}")

    def _post(self, channel: ChannelConfig, payload: Mapping[str, Any]) -> None:
        url = channel.resolve_url(os.environ)
        headers = {"Content-Type": "application/json", **dict(channel.headers)}
        try:
            response = requests.post(url, data=alerts.payload_bytes(payload), headers=headers, timeout=channel.timeout_seconds)
        except requests.RequestException as error:  # its text may hold the secret URL: keep it out of the log
            detail = redact(error, url_secrets(url, whole=True))[:300]
            raise requests.ConnectionError(f"{type(error).__name__} posting to {redact_webhook(url)}: {detail}") from None
        if response.status_code >= 300:
            body = redact(response.text[:200], url_secrets(url, whole=True))
            message = f"HTTP {response.status_code} from {redact_webhook(url)}: {body}"
            if response.status_code in RETRYABLE_HTTP:
                raise requests.HTTPError(message)
            raise _Permanent(message)

    def _mail(self, channel: ChannelConfig, message: EmailMessage) -> None:
        credentials = channel.credentials(os.environ)
        if channel.ssl:
            client = smtplib.SMTP_SSL(channel.smtp_host, channel.smtp_port, timeout=channel.timeout_seconds, context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(channel.smtp_host, channel.smtp_port, timeout=channel.timeout_seconds)
        with client:
            if channel.starttls and not channel.ssl:
                client.starttls(context=ssl.create_default_context())
            if credentials:
                client.login(*credentials)
            client.send_message(message)

    def send_incident(self, channel: ChannelConfig, incident: Mapping[str, Any], sleep: Callable[[float], None] = time.sleep) -> int:
        link, explorer = self.asset_url(), self.incident_url(incident)
        if channel.type == "email":
            message = alerts.email_message(incident, link, channel, explorer)
            return self._with_retries(channel, lambda: self._mail(channel, message), sleep)
        if channel.type == "slack":
            payload = alerts.slack_payload(incident, link, explorer)
        else:
            payload = alerts.webhook_payload(incident, link, explorer)
        return self._with_retries(channel, lambda: self._post(channel, payload), sleep)

    def send_digest(self, channel: ChannelConfig, incidents: Sequence[Mapping[str, Any]], sleep: Callable[[float], None] = time.sleep) -> int:
        link = self.asset_url()
        if channel.type == "email":
            message = alerts.digest_email(incidents, channel, link)
            return self._with_retries(channel, lambda: self._mail(channel, message), sleep)
        payload = alerts.digest_payload(incidents, channel, link)
        return self._with_retries(channel, lambda: self._post(channel, payload), sleep)

    # ---------------------------------------------------------------------------------------
    # delivering a batch of incidents to every channel

    def deliver(
        self,
        engine: sa.Engine,
        incidents: pd.DataFrame,
        now: dt.datetime | None = None,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = lambda message: None,
    ) -> DeliveryReport:
        """Send each incident once per channel; the delivery log decides what is still to send."""
        channels = self.channel_configs()
        records = _sorted_records(incidents)
        by_id = {r["incident_id"]: r for r in records}
        reports = []
        for channel in channels:
            report = ChannelReport(channel.name, channel.type)
            reports.append(report)
            delivery_log = DeliveryLog(engine, channel.name, dt.timedelta(minutes=self.stale_claim_minutes))
            existing = delivery_log.existing(list(by_id))
            claimed: list[dict] = []
            for incident in records:
                row = existing.get(incident["incident_id"])
                if row is not None and row["status"] in ("delivered", "digested", "suppressed"):
                    report.already_done += 1
                    continue
                if not channel.accepts(incident):
                    report.filtered += 1
                    continue
                stamp = _now(now)
                parent = incident.get("cohort_incident_id")
                if incident["kind"] == "device" and parent and "cohort" in channel.kinds:
                    # covered by its cohort incident (which this channel receives): recorded, never sent alone
                    if delivery_log.claim(incident, stamp, status="suppressed", detail=f"covered by cohort incident {parent}"):
                        report.suppressed += 1
                    else:
                        report.already_done += 1
                    continue
                if delivery_log.claim(incident, stamp):
                    claimed.append(incident)
                else:
                    report.already_done += 1
            if not claimed:
                continue
            if channel.rate_limit_per_hour is None:
                individual, rest = claimed, []
            else:
                sent = delivery_log.delivered_since(_now(now) - dt.timedelta(hours=1))
                budget = max(channel.rate_limit_per_hour - sent, 0)
                individual, rest = claimed[:budget], claimed[budget:]
                report.rate_limited = len(rest)
            for incident in individual:
                try:
                    attempts = self.send_incident(channel, incident, sleep=sleep)
                except (DeliveryError, alerts.ChannelConfigError) as error:
                    delivery_log.finish([incident["incident_id"]], "failed", _now(now), str(error))
                    report.failed += 1
                    report.errors.append(f"{incident['incident_id']}: {error}")
                    log(f"alert {incident['incident_id']} to {channel.name} failed: {error}")
                    continue
                delivery_log.finish([incident["incident_id"]], "delivered", _now(now), f"{attempts} attempt(s)")
                report.delivered += 1
            if rest:
                ids = [i["incident_id"] for i in rest]
                digest = alerts.digest_id(channel.name, ids)
                try:
                    attempts = self.send_digest(channel, rest, sleep=sleep)
                except (DeliveryError, alerts.ChannelConfigError) as error:
                    delivery_log.finish(ids, "failed", _now(now), f"digest {digest}: {error}", digest_id=digest)
                    report.failed += len(ids)
                    report.errors.append(f"digest of {len(ids)}: {error}")
                    log(f"digest of {len(ids)} incidents to {channel.name} failed: {error}")
                    continue
                delivery_log.finish(ids, "digested", _now(now), f"digest of {len(ids)}, {attempts} attempt(s)", digest_id=digest)
                report.digested += len(ids)
                report.digests_sent += 1
        return DeliveryReport(reports)


def _channel_secrets(channel: ChannelConfig) -> list[str]:
    """What a channel's errors must never show: its URL's secret parts, its SMTP password."""
    secrets: list[str] = []
    if channel.url or channel.url_env:
        secrets += url_secrets(channel.url or os.environ.get(channel.url_env or ""), whole=True)
    if channel.password_env:
        secrets.append(os.environ.get(channel.password_env, ""))
    return secrets


class _Permanent(Exception):
    """A failure that retrying within this run cannot fix (HTTP 4xx other than 408/425/429)."""


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.UTC)


def _sorted_records(incidents: pd.DataFrame) -> list[dict]:
    """Cohort incidents first, then the most severe: they get the rate limit's individual slots."""
    if incidents.empty:
        return []
    frame = incidents.assign(
        _rank=incidents["severity_level"].map(severity_rank),
        _cohort=(incidents["kind"] == "cohort").astype(int),
    ).sort_values(["_cohort", "_rank", "max_severity", "started_at", "incident_id"], ascending=[False, False, False, True, True])
    frame = frame.drop(columns=["_rank", "_cohort"]).astype("object")
    return frame.where(frame.notna(), None).to_dict("records")
