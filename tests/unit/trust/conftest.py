from __future__ import annotations

import pytest
from trustpki import Lab, build_lab


@pytest.fixture(scope="session")
def lab() -> Lab:
    return build_lab()
