"""device_inventory (unpartitioned): device metadata from the fleet management database.

Upstream of ``validated_telemetry``, which joins its cohort attributes (the ones named in
``ANOMALY_ASSETS_INVENTORY_COLUMNS``) onto the valid rows with
``anomaly_assets.core.inventory.join_inventory``, so they reach the features as cohort columns.
When the inventory is not configured (no ``ANOMALY_ASSETS_INVENTORY_URL``) the asset materializes
an empty frame and nothing is joined. When it is unreachable, the frame is empty with a warning in
its metadata and scoring still runs, with the attributes ``unknown``. Its data version is a hash of
its content, so validated partitions turn stale in the UI only when the inventory really changed.
"""

import hashlib

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
    description="Device metadata (cohort attributes) from the fleet management database, joined onto "
    "validated_telemetry; empty (with a warning when unreachable) when the inventory is not configured.",
)
def device_inventory(context: dg.AssetExecutionContext, inventory_source: InventorySource) -> dg.Output[pd.DataFrame]:
    frame, metadata = read_inventory(inventory_source)
    if "warning" in metadata:
        context.log.warning(str(metadata["warning"]))
    return dg.Output(
        frame,
        metadata={"dagster/row_count": len(frame), "source": inventory_source.describe(), **metadata},
        data_version=dg.DataVersion(content_hash(frame)),
    )


def content_hash(frame: pd.DataFrame) -> str:
    """Equal for equal inventories, whatever order the database returned the rows in."""
    ordered = frame.sort_values(list(frame.columns), ignore_index=True) if len(frame) else frame
    digest = hashlib.sha256(",".join(map(str, ordered.columns)).encode())
    digest.update(pd.util.hash_pandas_object(ordered, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]
