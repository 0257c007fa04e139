"""Video ReID datasets registered into torchreid on import."""
from typing import Dict

VIDEO_DATASETS: Dict[str, type] = {}  # new names
CORRECTED_DATASETS: Dict[str, type] = {}  # torchreid built-in names pointed at corrected subclasses
