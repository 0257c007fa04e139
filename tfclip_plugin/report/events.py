"""Scalars from the tensorboard event files torchreid's ``SummaryWriter`` leaves in a run folder."""
from __future__ import annotations

import glob
import os
from typing import Dict, Tuple

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

Series = Tuple[np.ndarray, np.ndarray]


def read_scalars(run_dir: str) -> Dict[str, Series]:
    """Every scalar tag of the run's event files: tag -> (steps int64 (n,), values float64 (n,)).

    All ``events.out.tfevents.*`` files directly in ``run_dir`` are read (a resumed run writes
    several), points sorted by step. Empty when the run has no event files.
    """
    if not glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
        return {}
    accumulator = EventAccumulator(run_dir, size_guidance={SCALARS: 0})
    accumulator.Reload()
    scalars: Dict[str, Series] = {}
    for tag in accumulator.Tags()[SCALARS]:
        events = sorted(accumulator.Scalars(tag), key=lambda e: e.step)
        scalars[tag] = (
            np.array([e.step for e in events], dtype=np.int64),
            np.array([e.value for e in events], dtype=np.float64),
        )
    return scalars
