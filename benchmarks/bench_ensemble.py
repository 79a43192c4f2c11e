"""The ensemble's scoring stage against the forest alone, on one core.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ensemble.py [--devices 300] [--repeats 15]

Trains the default detector on 7 days of a synthetic fleet (11 metrics, 5-minute samples), builds
the model inputs of the next day once, then times ``raw_scores`` (every member and the fusion,
what the ``score`` stage of ``anomaly-assets bench`` times) and the compiled forest alone, best
of ``--repeats`` runs each, so that other jobs on a shared machine disturb the figure less.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import pandas as pd

from anomaly_assets.core.baselines import fit_baselines
from anomaly_assets.core.cohorts import fit_cohort_stats
from anomaly_assets.core.detector import DetectorConfig, fit_slice, train_detector
from anomaly_assets.core.features import FeatureSpec, build_device_features
from anomaly_assets.core.generator import COHORT_COLUMNS, METRICS, FleetConfig, generate_days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    fleet = FleetConfig(n_devices=args.devices, seed=3)
    days = [fleet.start_date + dt.timedelta(days=d) for d in range(8)]
    telemetry = generate_days(fleet, days)
    spec = FeatureSpec(metrics=METRICS, cohort_columns=COHORT_COLUMNS)
    scored_day = pd.Timestamp(days[7], tz="UTC")
    training = build_device_features(telemetry.loc[telemetry["timestamp"] < scored_day], spec)
    rows = fit_slice(training)
    stats, base = fit_cohort_stats(rows, spec.metrics, spec.cohort_columns), fit_baselines(rows, spec.metrics, spec.cohort_columns)
    model, _ = train_detector(training, stats, base, spec, DetectorConfig(), label_column=None)
    features = build_device_features(telemetry, spec, keep_from=scored_day)
    inputs = model.model_inputs(features)
    best = {"ensemble (raw_scores)": float("inf"), "forest alone": float("inf")}
    for _ in range(args.repeats):
        clock = time.perf_counter()
        model.raw_scores(inputs)
        best["ensemble (raw_scores)"] = min(best["ensemble (raw_scores)"], time.perf_counter() - clock)
        clock = time.perf_counter()
        model.forest_scores(inputs.forest)
        best["forest alone"] = min(best["forest alone"], time.perf_counter() - clock)
    print(f"{len(features):,} rows, members {', '.join(model.members)}, device matrix {inputs.device.shape[1]} columns, "
          f"{model.reconstruction.components.shape[1]} components")
    for name, seconds in best.items():
        print(f"{name:<24}{len(features) / seconds:>14,.0f} rows/s (best of {args.repeats})")


if __name__ == "__main__":
    main()
