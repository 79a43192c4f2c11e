"""Reader for the Server Machine Dataset (SMD) layout, into the backtest's long format.

Layout (see ../shared/datasets/smd/SOURCE.md): ``ServerMachineDataset/train/<m>.txt(.gz)``
(unlabelled), ``test/<m>.txt(.gz)`` and ``test_label/<m>.txt`` (one 0/1 per test row); 38
anonymous metrics, no header, no timestamps. Timestamps are synthesized at 1-minute steps from a
fixed origin, the test rows continuing after the train rows; ``device_id`` is the machine name;
``split`` comes from the folder. Training rows have no label (empty).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

ORIGIN = pd.Timestamp("2020-01-01", tz="UTC")
STEP = pd.Timedelta(minutes=1)


def smd_root(path: str | Path) -> Path:
    """The ``ServerMachineDataset`` folder, given it or its parent."""
    path = Path(path)
    for candidate in (path, path / "ServerMachineDataset"):
        if (candidate / "test").is_dir() and (candidate / "test_label").is_dir():
            return candidate
    raise FileNotFoundError(f"{path} is not an SMD folder (expected train/, test/, test_label/ inside it)")


def _data_file(folder: Path, machine: str) -> Path | None:
    for name in (f"{machine}.txt.gz", f"{machine}.txt"):
        if (folder / name).exists():
            return folder / name
    return None


def smd_machines(path: str | Path) -> list[str]:
    """Machines with train, test and label files, sorted by group and number."""
    root = smd_root(path)
    names = {p.name.split(".")[0] for p in (root / "test").glob("machine-*.txt*")}
    usable = [m for m in names if _data_file(root / "train", m) and (root / "test_label" / f"{m}.txt").exists()]
    return sorted(usable, key=lambda m: tuple(int(x) for x in m.split("-")[1:]))


def read_smd(path: str | Path, machines: Sequence[str] | None = None) -> pd.DataFrame:
    """The machines' train and test rows in long format (columns device_id, timestamp, split,
    label, m01..m38)."""
    root = smd_root(path)
    available = smd_machines(root)
    chosen = list(machines) if machines else available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise FileNotFoundError(f"SMD machine(s) {unknown} have no train/test/label files in {root}; available: {available}")
    frames = []
    for machine in chosen:
        train = pd.read_csv(_data_file(root / "train", machine), header=None, dtype=np.float64)
        test = pd.read_csv(_data_file(root / "test", machine), header=None, dtype=np.float64)
        labels = np.loadtxt(root / "test_label" / f"{machine}.txt", dtype=np.int64, ndmin=1)
        if len(labels) != len(test):
            raise ValueError(f"{machine}: {len(labels)} labels for {len(test)} test rows")
        n_train, n_test = len(train), len(test)
        values = pd.concat([train, test], ignore_index=True)
        values.columns = [f"m{i + 1:02d}" for i in range(values.shape[1])]
        frame = pd.DataFrame(
            {
                "device_id": machine,
                "timestamp": ORIGIN + STEP * np.arange(n_train + n_test),
                "split": np.r_[np.repeat("train", n_train), np.repeat("test", n_test)],
                "label": np.r_[np.full(n_train, np.nan), labels.astype(np.float64)],
            }
        )
        frames.append(pd.concat([frame, values], axis=1))
    return pd.concat(frames, ignore_index=True)
