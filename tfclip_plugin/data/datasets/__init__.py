"""Video ReID datasets registered into torchreid on import."""
from typing import Dict

from .ilidsvid import iLIDSVID, iLIDSVIDTFCLIP
from .layout import DatasetLayoutError
from .lsvid import LSVID
from .mars import Mars
from .prid2011 import PRID2011
from .synthvid import SynthVid

VIDEO_DATASETS: Dict[str, type] = {  # new names
    "lsvid": LSVID,
    "synthvid": SynthVid,
    "ilidsvid_tfclip": iLIDSVIDTFCLIP,
}
CORRECTED_DATASETS: Dict[str, type] = {  # torchreid built-in names pointed at corrected subclasses
    "mars": Mars,
    "ilidsvid": iLIDSVID,
    "prid2011": PRID2011,
}

__all__ = ["VIDEO_DATASETS", "CORRECTED_DATASETS", "DatasetLayoutError", "LSVID", "Mars", "PRID2011", "SynthVid",
           "iLIDSVID", "iLIDSVIDTFCLIP"]
