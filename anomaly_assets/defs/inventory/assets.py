"""device_inventory (unpartitioned): device metadata from the fleet management database.

Joined onto telemetry as cohort attributes with ``anomaly_assets.core.inventory.join_inventory``.
When the inventory is not configured (no ``ANOMALY_ASSETS_INVENTORY_URL``) or unreachable, the
asset materializes an empty frame with a warning in its metadata: enrichment is skipped and
scoring still runs on the telemetry's own cohort columns.
"""

import dagster as dg
import pandas as pd

from anomaly_assets.version import code_version
from anomaly_assets.resources.sources import InventorySource, TelemetrySourceError


def read_inventory(inventory_source: InventorySource) -> tuple[pd.DataFrame, dict[str, object]]:
    """The inventory frame and metadata; an empty frame with a ``warning`` when it cannot be read."""
    if not inventory_source.configured():
        warning = "device inventory not configured (ANOMALY_ASSETS_INVENTORY_URL unset): enrichment skipped"
        return pd.DataFrame({"device_id": pd.Series(dtype="str")}), {"warning": warning, "enriched": False}
    try:
        frame = inventory_source.read()
    except TelemetrySourceError as error:  # message is already redacted
        return pd.DataFrame({"device_id": pd.Series(dtype="str")}), {
            "warning": f"device inventory unreachable, enrichment skipped: {error}",
            "enriched": False,
        }
    return frame, {"enriched": True, "devices": int(frame["device_id"].nunique())}


@dg.asset(
    group_name="ingestion",
    kinds={"pandas", "parquet"},
    owners=["team:fleet-analytics"],
    code_version=code_version(),
    description="Device metadata (cohort attributes) from the fleet management database; empty with a "
    "warning when the inventory is not configured or unreachable.",
)
def device_inventory(context: dg.AssetExecutionContext, inventory_source: InventorySource) -> dg.Output[pd.DataFrame]:
    frame, metadata = read_inventory(inventory_source)
    if "warning" in metadata:
        context.log.warning(str(metadata["warning"]))
    return dg.Output(
        frame,
        metadata={"dagster/row_count": len(frame), "source": inventory_source.describe(), **metadata},
    )
