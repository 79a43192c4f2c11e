"""Joining device inventory (fleet management metadata) onto telemetry as cohort attributes."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

UNKNOWN = "unknown"


def join_inventory(
    telemetry: pd.DataFrame, inventory: pd.DataFrame | None, attributes: Sequence[str] | None = None
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Left-join inventory attributes onto telemetry by ``device_id``.

    - Telemetry rows are never dropped or duplicated (inventory is de-duplicated, last row wins).
    - A telemetry column of the same name is kept where it has a value; the inventory fills gaps.
    - Devices missing from the inventory get ``"unknown"``.
    - ``inventory`` None (not configured or unreachable): telemetry is returned unchanged and the
      report says so, so scoring still runs.
    Returns the joined frame and a small report for asset metadata.
    """
    if inventory is None:
        return telemetry, {"inventory_joined": False}
    if "device_id" not in inventory:
        raise KeyError("the inventory has no device_id column")
    attributes = list(attributes) if attributes is not None else [c for c in inventory.columns if c != "device_id"]
    table = inventory[["device_id", *attributes]].copy()
    table["device_id"] = table["device_id"].astype("str")
    table = table.drop_duplicates("device_id", keep="last").set_index("device_id")
    out = telemetry.copy()
    keys = out["device_id"].astype("str")
    known = keys.isin(table.index)
    for attribute in attributes:
        values = keys.map(table[attribute]).astype(object)
        values = values.where(values.notna(), UNKNOWN).astype("str")
        if attribute in out:
            existing = out[attribute]
            out[attribute] = existing.where(existing.notna(), values)
        else:
            out[attribute] = values
    devices = out.loc[~known.to_numpy(), "device_id"].nunique()
    return out, {
        "inventory_joined": True,
        "inventory_attributes": attributes,
        "devices_missing_from_inventory": int(devices),
    }
