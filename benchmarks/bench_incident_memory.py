"""Peak memory and time of device_incidents at fleet size, in chunks of devices against the whole
day in one chunk (what the asset did before it was chunked), measured in the same run.

    python benchmarks/bench_incident_memory.py                    # 100,000 devices, chunks of 1,000
    python benchmarks/bench_incident_memory.py --devices 20000 --skip-whole

No telemetry is generated, validated or scored: two days of ``scored_anomalies`` partitions
(the synthetic fleet's firmware regression day and the day after,
:mod:`anomaly_assets.core.synthetic_scores`) are written first, not measured, as the scoring asset
writes them (grouped by device, row groups of at most 32,768 rows). Then device_incidents
materializes the first day and the second (which continues the first's open incidents), each in
a process of its own, through the code location's definitions as the multiprocess executor runs
a step, so each figure is the step's peak resident memory (VmHWM). ``imports`` only loads the code
location: the floor every step stands on. The two configurations write their own results
databases, and the run ends by checking that their incident tables and states are identical.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_asset_memory import SEED, measure_step  # noqa: E402 (after the path set-up)

DAYS = ("2026-11-09", "2026-11-10")  # the firmware regression's day (cohort incident past midnight) and the next
STEPS = [("imports", DAYS[0]), ("device_incidents", DAYS[0]), ("device_incidents", DAYS[1])]


def write_scored_partitions(directory: Path, devices: int) -> dict[str, int]:
    """The two days' scored_anomalies files, a block of devices at a time; rows per day."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from anomaly_assets.core.generator import FleetConfig
    from anomaly_assets.core.synthetic_scores import synthetic_scored_day
    from anomaly_assets.resources.parquet_io import ROW_GROUP_ROWS

    directory.mkdir(parents=True)
    fleet = FleetConfig(n_devices=devices, seed=SEED)
    rows = {}
    for day in DAYS:
        writer, rows[day] = None, 0
        for block in synthetic_scored_day(fleet, dt.date.fromisoformat(day)):
            table = pa.Table.from_pandas(block, preserve_index=False)
            writer = writer or pq.ParquetWriter(directory / f"{day}.parquet", table.schema)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            rows[day] += len(block)
        writer.close()
    return rows


def prepare_home(home: Path, scored: Path, devices_per_chunk: int) -> None:
    """An embedded home whose parquet folder holds the written scored_anomalies partitions."""
    from anomaly_assets.settings import Settings, prepare_embedded_home

    settings = Settings(home=home, devices_per_chunk=devices_per_chunk)
    prepare_embedded_home(settings)
    settings.parquet_dir.mkdir(parents=True, exist_ok=True)
    (settings.parquet_dir / "scored_anomalies").symlink_to(scored, target_is_directory=True)


def incident_tables(home: Path):
    """The incidents and the incident state a configuration left, without run-specific columns."""
    from anomaly_assets.resources import ResultsStore, incident_store

    store = ResultsStore(url=f"sqlite:///{home / 'results.db'}")
    incidents = incident_store.read_incidents(store).drop(columns=["updated_at", "run_id"], errors="ignore")
    state = store.read_frame("select partition_date, kind, subject, state_json from incident_state order by 1, 2, 3")
    return incidents.sort_values("incident_id", ignore_index=True), state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--devices-per-chunk", type=int, default=1_000)
    parser.add_argument("--skip-whole", action="store_true", help="skip the one-chunk reference")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    configurations = {"chunks": args.devices_per_chunk}
    if not args.skip_whole:
        configurations["whole"] = max(args.devices, 1)
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="anomaly_incident_memory_") as tmp:
        scored = Path(tmp) / "scored_anomalies"
        print(f"writing 2 days of scored rows for {args.devices:,} devices (not measured)", file=sys.stderr)
        rows = write_scored_partitions(scored, args.devices)
        figures: dict[str, list[dict]] = {}
        for name, devices_per_chunk in configurations.items():
            home = Path(tmp) / name / "home"
            prepare_home(home, scored, devices_per_chunk)
            figures[name] = []
            for asset, day in STEPS:
                print(f"{name}: {asset} {day}", file=sys.stderr)
                figures[name].append({"step": asset, "day": day, **measure_step(home, devices_per_chunk, asset, day)})
                os.environ.clear()
                os.environ.update(saved)
        tables = {name: incident_tables(Path(tmp) / name / "home") for name in configurations}
    import pandas as pd

    incidents, state = tables["chunks"]
    identical = None
    if "whole" in tables:
        identical = incidents.equals(tables["whole"][0]) and state.equals(tables["whole"][1])
        if not identical:
            pd.testing.assert_frame_equal(incidents, tables["whole"][0])  # names the first difference
            pd.testing.assert_frame_equal(state, tables["whole"][1])
    report = {
        "devices": args.devices,
        "devices_per_chunk": args.devices_per_chunk,
        "rows_per_day": rows,
        "incidents": {kind: int(n) for kind, n in incidents["kind"].value_counts().items()},
        "continued_past_midnight": int((incidents["first_partition"] != incidents["last_partition"]).sum()),
        "identical_to_one_chunk": identical,
        "steps": figures,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.devices:,} devices, {sum(rows.values()):,} scored rows over 2 days, {os.cpu_count()} cores; each step in its own process")
    print(f"incidents {report['incidents']}, {report['continued_past_midnight']} continued past midnight; identical to one chunk: {identical}")
    header = f"{'step':<22}{'day':<12}{'chunks of ' + format(args.devices_per_chunk, ','):>22}"
    header += f"{'one chunk':>22}{'memory ratio':>14}" if "whole" in figures else ""
    print(header)
    print(f"{'':<34}{'peak MB':>11}{'seconds':>11}" + (f"{'peak MB':>11}{'seconds':>11}" if "whole" in figures else ""))
    for index, (asset, day) in enumerate(STEPS):
        chunked = figures["chunks"][index]
        line = f"{asset:<22}{day:<12}{chunked['peak_mb']:>11,.0f}{chunked['seconds']:>11.1f}"
        if "whole" in figures:
            whole = figures["whole"][index]
            line += f"{whole['peak_mb']:>11,.0f}{whole['seconds']:>11.1f}{whole['peak_mb'] / chunked['peak_mb']:>13.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
