"""The ensemble's building blocks (core.ensemble) and the promotion gate's choice of rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core.ensemble import DeviceNorms, Reconstruction, ScoreFusion, TailCalibration, robust_z_scores
from anomaly_assets.core.promotion import shadow_score, unseen_rows
from anomaly_assets.core.training_window import in_device_sample


def test_device_norms_make_a_steady_offset_normal_for_its_device():
    rng = np.random.default_rng(0)
    devices = pd.Series(np.repeat(["a", "b"], 500))
    values = rng.normal(0, 1, (1000, 1)) + np.where(devices.to_numpy() == "b", 50.0, 0.0)[:, None]
    norms = DeviceNorms.fit(values, devices, pd.Series(["c"] * 1000))
    rows = norms.table_rows(pd.Series(["a", "b", "new"]), np.zeros(3, dtype=np.int64), pd.Series(["c"]))
    z = norms.standardize(np.array([[50.0], [50.0], [50.0]]), rows)
    assert abs(z[1, 0]) < 0.5  # device b sits at 50: normal for itself
    assert z[0, 0] > 10  # device a never does
    assert rows[2] == len(norms.devices)  # a newcomer is standardized against its cohort
    # A column the fleet never moved is left out (z 0), as is a missing value.
    constant = DeviceNorms.fit(np.ones((10, 1)), pd.Series(["a"] * 10), pd.Series(["c"] * 10))
    assert constant.standardize(np.array([[5.0], [np.nan]]), np.zeros(2, dtype=np.int64)).tolist() == [[0.0], [0.0]]


def test_tail_calibration_weighs_a_rare_count_by_its_rarity():
    rng = np.random.default_rng(1)
    gaussian = rng.normal(0, 1, 200_000)
    rare = (rng.random(200_000) < 0.0005).astype(float) * 45.0  # a count that is 1 on 0.05% of rows
    calibration = TailCalibration.fit(np.c_[gaussian, rare])
    mapped = calibration.apply(np.array([[3.0, 45.0], [0.0, 0.0], [-6.0, 90.0]]))
    assert mapped[0, 0] == pytest.approx(3.0, abs=0.1)  # a Gaussian column stays as it is
    assert 3.0 < mapped[0, 1] < 5.0  # a 1-in-2,000 value weighs about 4, not 45
    assert mapped[1, 1] < 1.0 and mapped[2, 0] < -5.5 and mapped[2, 1] > mapped[0, 1]


def test_reconstruction_scores_rows_off_the_learnt_structure():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 1, (5000, 1))
    z = np.c_[base, base + rng.normal(0, 0.05, (5000, 1)), rng.normal(0, 1, (5000, 1))]
    model = Reconstruction.fit(z, variance=0.6)
    on, off = model.scores(np.array([[2.0, 2.0, 0.0], [2.0, -2.0, 0.0]]))
    assert off > 10 * on
    scores, largest = model.scores_and_largest_z(np.array([[2.0, -3.0, 1.0]]), np.array([0, 2]))
    assert largest[0] == 2.0 and scores[0] == pytest.approx(model.scores(np.array([[2.0, -3.0, 1.0]]))[0])
    np.testing.assert_array_equal(robust_z_scores(np.array([[2.0, -3.0, 1.0]]), np.array([0, 2])), [2.0])


def test_fusion_ranks_each_member_against_its_fitting_distribution():
    """Each member maps to the normal quantile of its tail probability: a member on a 1000x scale
    or with a heavy tail counts like the others, and beyond its fitted maximum it still grows."""
    rng = np.random.default_rng(3)
    members = np.c_[rng.random(10_000), 1000 * rng.standard_exponential(10_000) ** 3]
    fusion = ScoreFusion.fit(members)
    standardized = fusion.standardized(members)
    # The half-normal's quantiles: 0.674 at the median, 2.576 at the 99th percentile.
    np.testing.assert_allclose(np.median(standardized, axis=0), 0.674, atol=0.01)
    np.testing.assert_allclose(np.quantile(standardized, 0.99, axis=0), 2.576, atol=0.02)
    np.testing.assert_allclose(fusion.fuse(members), standardized.mean(axis=1), atol=1e-12)
    top = members.max(axis=0)
    beyond = fusion.standardized(np.array([top, 10 * top, 100 * top]))
    assert (np.diff(beyond, axis=0) > 0).all()  # more extreme stays more anomalous
    assert beyond[2, 1] < 10 * beyond[0, 1]  # logarithmically (100x the score is not 100x the weight)


def test_rare_counts_are_weighed_by_how_rare_they_are_fleet_wide():
    """A count that is 0 on nearly every row (reboots) has no spread of its own: a device that
    never rebooted while fitted must not score a reboot thousands of times higher than one that
    did; both land near the normal quantile of the event's fleet-wide rarity."""
    rng = np.random.default_rng(5)
    devices = pd.Series(np.repeat([f"d{i}" for i in range(20)], 1000))
    counts = (rng.random((20_000, 1)) < 0.001).astype(float)
    counts[:1000] = 0.0  # d0 never reboots while fitted
    norms = DeviceNorms.fit(counts, devices, pd.Series(["c"] * 20_000))
    assert norms.discrete[0]
    norms.calibrate(norms.standardize(counts, norms.table_rows(devices, np.zeros(20_000, np.int64), pd.Series(["c"]))))
    rows = norms.table_rows(pd.Series(["d0", "d1"]), np.zeros(2, dtype=np.int64), pd.Series(["c"]))
    z = norms.standardize(np.array([[1.0], [1.0]]), rows)
    assert z[0, 0] == pytest.approx(z[1, 0])
    assert 2.5 < z[0, 0] < 6.0


def test_promotion_compares_on_rows_neither_model_saw():
    stamps = pd.Series(pd.date_range("2026-11-07", periods=48, freq="1h", tz="UTC"))
    features = pd.DataFrame({"timestamp": stamps})
    challenger = {"validation_end": "2026-11-07 23:00:00+00:00"}
    older_champion = {"validation_end": "2026-11-06 23:00:00+00:00"}
    mask = unseen_rows(features, challenger, older_champion)
    assert mask.sum() == 24 and (stamps[mask] >= pd.Timestamp("2026-11-08", tz="UTC")).all()
    newer_champion = {"validation_end": "2026-11-08 23:00:00+00:00"}
    assert not unseen_rows(features, challenger, newer_champion).any()
    assert unseen_rows(features, {}, {}).all()


class _ScoreByValue:
    """A stand-in model: its score is a fixed function of each row's value."""

    def __init__(self, factor: float):
        self.factor = factor

    def score(self, rows: pd.DataFrame) -> pd.DataFrame:
        score = rows["value"].to_numpy() * self.factor
        return rows.assign(score=score, is_anomaly=score > 5.0, severity="low")


def test_shadow_scores_in_chunks_equal_the_whole_partition_and_keep_only_what_the_gate_reads():
    rng = np.random.default_rng(3)
    devices = [f"dev-{i:03d}" for i in range(40)]
    frame = pd.DataFrame(
        {
            "device_id": np.repeat(devices, 10),
            "timestamp": np.tile(pd.date_range("2026-11-08", periods=10, freq="5min", tz="UTC"), 40),
            "value": rng.normal(3, 2, 400),
            "is_injected_anomaly": rng.random(400) < 0.1,
        }
    ).sample(frac=1.0, random_state=1)  # chunks sort their rows by device and time
    chunks = [frame.loc[frame["device_id"].isin(devices[i : i + 7])] for i in range(0, 40, 7)]
    everything = lambda chunk: np.ones(len(chunk), bool)  # noqa: E731
    whole = shadow_score([frame], _ScoreByValue(1.0), _ScoreByValue(2.0), everything, "is_injected_anomaly")
    chunked = shadow_score(chunks, _ScoreByValue(1.0), _ScoreByValue(2.0), everything, "is_injected_anomaly")
    pd.testing.assert_frame_equal(chunked.challenger, whole.challenger)
    pd.testing.assert_frame_equal(chunked.champion, whole.champion)
    np.testing.assert_array_equal(chunked.labels, whole.labels)
    assert list(chunked.challenger.columns) == ["device_id", "timestamp", "score", "is_anomaly"]
    assert (chunked.champion["score"] == 2 * chunked.challenger["score"]).all()

    # A device sample: the same devices whichever chunk they are in, about the share asked for.
    sampled = shadow_score(
        chunks, _ScoreByValue(1.0), _ScoreByValue(2.0), lambda c: in_device_sample(c["device_id"], 0.25, seed=0), None
    )
    kept = set(sampled.challenger["device_id"])
    assert kept == set(frame.loc[in_device_sample(frame["device_id"], 0.25, seed=0), "device_id"])
    assert 3 <= len(kept) <= 17 and sampled.labels is None
    assert sampled.challenger.groupby("device_id").size().eq(10).all()  # whole devices
