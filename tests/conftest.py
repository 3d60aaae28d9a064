import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does (before torch loads)

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RECON_SHARED_DATA", REPO.parent / "shared" / "data"))
PANOPTIC = SHARED_DATA / "panoptic_basketball"


@pytest.fixture
def panoptic_root() -> Path:
    """The real Panoptic basketball capture; tests using it skip when ../shared is absent."""
    if not (PANOPTIC / "train_meta.json").is_file():
        pytest.skip(f"real data not present at {PANOPTIC}")
    return PANOPTIC


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one thread is faster than two and does not fight other work on the machine.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
