"""Row-level validation of telemetry against the contract, with Great Expectations 1.x.

- :mod:`.validate`: the entry point, :func:`validate_telemetry`, and how a window is split;
- :mod:`.results`: the result types and :class:`SchemaError`;
- :mod:`.rules`: the contract's rules as GX expectations with their reasons;
- :mod:`.frames`: preparing the delivered frame and the typed frame the row rules run on;
- :mod:`.engine`: the GX context, suites and caches.
"""

from anomaly_assets.core.contract import TelemetryContract
from anomaly_assets.core.validation.results import (
    FAMILIES,
    FAMILY_DESCRIPTIONS,
    QUARANTINE_COLUMNS,
    RuleResult,
    SchemaError,
    ValidationResult,
)
from anomaly_assets.core.validation.validate import validate_telemetry

__all__ = [
    "FAMILIES",
    "FAMILY_DESCRIPTIONS",
    "QUARANTINE_COLUMNS",
    "RuleResult",
    "SchemaError",
    "TelemetryContract",
    "ValidationResult",
    "validate_telemetry",
]
