"""Addresses of the explorer's pages, for links from Dagster metadata and alert messages.

Set ``ANOMALY_ASSETS_EXPLORER_URL`` to where people reach the explorer (``anomaly-assets
explore`` serves http://127.0.0.1:8050 by default); without it no link is made.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote, urlencode

EXPLORER_URL_ENV = "ANOMALY_ASSETS_EXPLORER_URL"


def explorer_url(environ: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if environ is None else environ).get(EXPLORER_URL_ENV, "").strip()
    return value.rstrip("/") or None


def day_page(base: str, day: str) -> str:
    return f"{base}/days/{quote(day)}"


def device_page(base: str, device_id: str, day: str | None = None, first_day: str | None = None) -> str:
    query = {k: v for k, v in (("from", first_day), ("day", day)) if v}
    return f"{base}/devices/{quote(str(device_id), safe='')}" + (f"?{urlencode(query)}" if query else "")


def incident_page(base: str, incident_id: str) -> str:
    return f"{base}/incidents/{quote(str(incident_id), safe='')}"


def incidents_page(base: str, day: str | None = None) -> str:
    return f"{base}/incidents" + (f"?{urlencode({'day': day})}" if day else "")


def quarantine_page(base: str, day: str) -> str:
    return f"{base}/quarantine?{urlencode({'day': day})}"
