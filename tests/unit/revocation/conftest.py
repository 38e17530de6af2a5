from __future__ import annotations

from collections.abc import Iterator

import pytest
from revpki import PKI, TestServer, make_pki


@pytest.fixture(scope="session")
def pki() -> PKI:
    return make_pki()


@pytest.fixture
def server() -> Iterator[TestServer]:
    s = TestServer()
    try:
        yield s
    finally:
        s.close()
