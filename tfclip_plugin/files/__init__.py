"""The plugin's on-disk formats, each with its writer and reader side by side, and the atomic writer they
share: checkpoints (:mod:`.checkpoint_file`), ``results.json`` (:mod:`.results`), ``test_outputs/*.npz``
(:mod:`.test_outputs`), a training run's ``config.yaml`` and ``interrupted.json`` (:mod:`.run_records`)."""
from .atomic import WriteFailedError, atomic_write, write_text

__all__ = ["WriteFailedError", "atomic_write", "write_text"]
