"""synthimg: the generated image benchmark, parsed by torchreid's Market-1501 code (it is written in that
format)."""
from __future__ import annotations

from ... import host
from ..synthimg import DATASET_DIR, generate_synthimg
from ..synthvid import ensure_generated


class SynthImg(host.Market1501):
    """``<root>/synthimg``, generated with the default seed and sizes when missing (see
    :func:`~tfclip_plugin.data.synthimg.generate_synthimg` for other seeds and sizes), then read by torchreid's
    Market-1501 parser: junk (pid -1) dropped, distractors (pid 0) kept in the gallery, cameras 0-based. The
    image lists are sorted by path and training labels follow ascending person id, so a seeded run does not
    depend on the order in which the file system lists the folder (torchreid's parser keeps glob's order)."""

    dataset_dir = DATASET_DIR

    def __init__(self, root: str = "", **kwargs) -> None:
        ensure_generated(root, DATASET_DIR, generate_synthimg)
        super().__init__(root=root, **kwargs)

    def process_dir(self, dir_path: str, relabel: bool = False):
        items = sorted(super().process_dir(dir_path, relabel=False))
        if not relabel:
            return items
        labels = {pid: label for label, pid in enumerate(sorted({item[1] for item in items}))}
        return [(path, labels[pid], camid) for path, pid, camid in items]
