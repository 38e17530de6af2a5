"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from certfailover_lab.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server (Debian's postgresql package) for the session."""
    with PostgresServer() as server:
        yield server


_counter = iter(range(1, 1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """A factory of fresh, empty databases: SQLite (default) and PostgreSQL (fleets)."""
    if request.param == "sqlite":
        return lambda: f"sqlite:///{tmp_path / f'state-{next(_counter)}.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return lambda: server.create_database(f"cf_{next(_counter)}")
