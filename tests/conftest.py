"""pytest fixtures shared by the test modules."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test with 64-bit floats (tight tolerances), restoring the global setting afterwards."""
    with jax.enable_x64(True):
        yield
