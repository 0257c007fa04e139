"""ReID datasets registered into torchreid on import: video datasets and the image datasets."""
from typing import Dict

from .ilidsvid import iLIDSVID, iLIDSVIDTFCLIP
from .layout import DatasetLayoutError
from .lsvid import LSVID
from .mars import Mars
from .msmt17 import MSMT17TrainVal
from .prid2011 import PRID2011
from .synthimg import SynthImg
from .synthvid import SynthVid

VIDEO_DATASETS: Dict[str, type] = {  # new names
    "lsvid": LSVID,
    "synthvid": SynthVid,
    "ilidsvid_tfclip": iLIDSVIDTFCLIP,
}
IMAGE_DATASETS: Dict[str, type] = {  # new names in torchreid's image dataset registry
    "synthimg": SynthImg,
    "msmt17_trainval": MSMT17TrainVal,
}
CORRECTED_DATASETS: Dict[str, type] = {  # torchreid built-in names pointed at corrected subclasses
    "mars": Mars,
    "ilidsvid": iLIDSVID,
    "prid2011": PRID2011,
}

__all__ = ["VIDEO_DATASETS", "IMAGE_DATASETS", "CORRECTED_DATASETS", "DatasetLayoutError", "LSVID", "MSMT17TrainVal",
           "Mars", "PRID2011", "SynthImg", "SynthVid", "iLIDSVID", "iLIDSVIDTFCLIP"]
