"""Joining device inventory (fleet management metadata) onto telemetry as cohort attributes."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from anomaly_assets.core.contract import TelemetryContract

UNKNOWN = "unknown"


def inventory_cohort_columns(contract: TelemetryContract, attributes: Sequence[str]) -> tuple[str, ...]:
    """The features' cohort columns: the contract's, then the inventory's attributes it lacks."""
    return tuple(dict.fromkeys([*contract.cohort_columns, *attributes]))


def contract_knowing(contract: TelemetryContract, attributes: Sequence[str]) -> TelemetryContract:
    """``contract`` for validating telemetry that the inventory's ``attributes`` are joined onto
    afterwards: an attribute the contract does not name is no longer an unknown column (dropped),
    but an optional one, so a value the telemetry delivers itself survives validation and the
    join keeps it. Rows are validated, counted and quarantined exactly as before."""
    new = [a for a in dict.fromkeys(attributes) if a not in contract.known_columns]
    return contract.replace(optional_columns=(*contract.optional_columns, *new)) if new else contract


def join_inventory(
    telemetry: pd.DataFrame, inventory: pd.DataFrame | None, attributes: Sequence[str] | None = None
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Left-join inventory attributes onto telemetry by ``device_id``.

    - Telemetry rows are never dropped or duplicated (inventory is de-duplicated, last row wins).
    - A telemetry column of the same name is kept (as text) where it has a value; the inventory
      fills gaps.
    - Devices missing from the inventory, and every device when the inventory lacks an attribute
      (an empty inventory: not reachable when it was read), get ``"unknown"``.
    - ``inventory`` None (not configured): telemetry is returned unchanged and the report says so.
    Returns the joined frame and a small report for asset metadata.
    """
    if inventory is None:
        return telemetry, {"inventory_joined": False}
    if "device_id" not in inventory:
        raise KeyError("the inventory has no device_id column")
    attributes = list(attributes) if attributes is not None else [c for c in inventory.columns if c != "device_id"]
    present = [a for a in attributes if a in inventory]
    table = inventory[["device_id", *present]].copy()
    table["device_id"] = table["device_id"].astype("str")
    table = table.drop_duplicates("device_id", keep="last").set_index("device_id")
    out = telemetry.copy()
    keys = out["device_id"].astype("str")
    known = keys.isin(table.index)
    for attribute in attributes:
        if attribute in table:
            values = keys.map(table[attribute]).astype(object)
            values = values.where(values.notna(), UNKNOWN).astype("str")
        else:
            values = pd.Series(UNKNOWN, index=out.index, dtype="str")
        if attribute in out:
            existing = out[attribute]
            out[attribute] = existing.astype("str").where(existing.notna(), values)
        else:
            out[attribute] = values
    missing = out.loc[~known.to_numpy(), "device_id"].astype("str").unique()
    return out, {
        "inventory_joined": True,
        "inventory_attributes": attributes,
        "attributes_not_in_inventory": [a for a in attributes if a not in table],
        "devices_missing_from_inventory": int(len(missing)),
    }
