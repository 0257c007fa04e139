"""TF-CLIP models on open_clip's CLIP visual towers."""
from typing import Callable, Dict

MODEL_BUILDERS: Dict[str, Callable] = {}
