import numpy as np
import pytest


def unpack_codes(codes: np.ndarray) -> np.ndarray:
    """Element codes from packed bytes (element 2j low nibble, 2j+1 high nibble)."""
    codes = np.asarray(codes)
    return np.stack([codes & 0x0F, codes >> 4], axis=-1).reshape(*codes.shape[:-1], -1)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
