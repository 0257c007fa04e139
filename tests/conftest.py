import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402  (after the environment above)
from engine_fixtures import SYNTHVID_SIZE  # noqa: E402

from tfclip_plugin.data import generate_synthvid  # noqa: E402


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A small synthvid dataset (seed 3, ``SYNTHVID_SIZE``), one per test module."""
    root = str(tmp_path_factory.mktemp("data"))
    generate_synthvid(root, seed=3, **SYNTHVID_SIZE)
    return root


def pytest_configure(config):
    # tfclip_plugin.data.frames decodes JPEGs with torchvision, which deprecates its codecs (0.29) on every call;
    # the plugin silences that warning, pytest's per-test warning capture brings it back
    config.addinivalue_line("filterwarnings",
                            "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")
