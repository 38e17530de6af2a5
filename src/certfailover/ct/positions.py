"""The watch's position in each log, kept in the store (table `ct_logs`, store/db.py schema 6):
the last verified tree (size, root, the timestamp of the signed tree head that proved it), the
compact tree at that size, when it was last polled, and the last poll's problem ("" when it
verified).

The verified tree is the log's signed tree head, or, when a pass stopped reading a log before
its signed size (the pass budget ran out, or a request failed), the prefix read so far, proven
to be the start of the signed tree (a consistency proof, or the hash tiles of a tiled log): the
next pass goes on from there."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from ..store.db import Database, ct_logs
from .merkle import CompactTree

__all__ = ["Position", "all_positions", "load", "polled", "save", "set_problem"]


@dataclass(frozen=True)
class Position:
    log_id: str  # base64
    url: str
    tree_size: int
    root: bytes
    sth_timestamp: int
    nodes: tuple[bytes, ...]
    updated: datetime
    problem: str = ""

    def tree(self) -> CompactTree:
        return CompactTree(self.tree_size, self.nodes)


def load(db: Database, log_id: str) -> Position | None:
    with db.engine.connect() as conn:
        row = conn.execute(sa.select(ct_logs).where(ct_logs.c.log_id == log_id)).first()
    if row is None:
        return None
    return Position(row.log_id, row.url, int(row.tree_size), base64.b64decode(row.root_hash),
                    int(row.sth_timestamp),
                    tuple(base64.b64decode(n) for n in json.loads(row.nodes)),
                    row.updated, row.problem)


def all_positions(db: Database) -> list[Position]:
    with db.engine.connect() as conn:
        ids = [r.log_id for r in conn.execute(sa.select(ct_logs.c.log_id))]
    return [p for i in ids if (p := load(db, i)) is not None]


def polled(db: Database) -> dict[str, tuple[int, datetime]]:
    """Each log's verified size and when it was last polled (one query: a pass orders its
    logs by it)."""
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(ct_logs.c.log_id, ct_logs.c.tree_size, ct_logs.c.updated))
        return {r.log_id: (int(r.tree_size), r.updated) for r in rows}


def save(db: Database, pos: Position) -> None:
    values = {"url": pos.url, "tree_size": pos.tree_size,
              "root_hash": base64.b64encode(pos.root).decode(),
              "sth_timestamp": pos.sth_timestamp,
              "nodes": json.dumps([base64.b64encode(n).decode() for n in pos.nodes]),
              "updated": pos.updated, "problem": pos.problem}
    with db.engine.begin() as conn:
        done = conn.execute(sa.update(ct_logs).where(ct_logs.c.log_id == pos.log_id)
                            .values(**values)).rowcount
        if not done:
            conn.execute(sa.insert(ct_logs).values(log_id=pos.log_id, **values))


def set_problem(db: Database, log_id: str, problem: str, when: datetime) -> str:
    """Record the last poll's problem for a log with a position; returns the previous one."""
    with db.engine.begin() as conn:
        prev = conn.execute(sa.select(ct_logs.c.problem).where(ct_logs.c.log_id == log_id)).scalar()
        if prev is not None:
            conn.execute(sa.update(ct_logs).where(ct_logs.c.log_id == log_id)
                         .values(problem=problem, updated=when))
    return str(prev or "")
