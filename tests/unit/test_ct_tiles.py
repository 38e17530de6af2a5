"""The watch on a static-ct-api log: the lab log's checkpoint and tiles (full and partial),
unexpected certificates and precertificates found, a start at the end from hash tiles, a
rewritten history and a checkpoint signed by another key refused."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfailover.ct import loglist, positions
from certfailover.ct.settings import CTSettings
from certfailover.ct.tiles import tile_path
from certfailover.ct.watch import Watch
from certfailover.store.db import Database
from certfailover_lab import pki
from certfailover_lab.ctlog import CTLog, make_precert

SITES = {"shop": ("shop.example.test",)}


class Lab:
    def __init__(self, tmp: Path, log: CTLog) -> None:
        self.log = log
        self.db = Database(f"sqlite:///{tmp / 'state.db'}")
        self.db.migrate()
        self.ca = pki.make_intermediate(pki.make_root("Root"), "Some CA")
        self.events: list[tuple[object, ...]] = []

    def fill(self, n: int) -> None:
        for _ in range(n):
            c, _ = pki.make_leaf(self.ca, [f"h{self.log.size}.example.org"])
            self.log.add_chain([c, self.ca.cert])

    def watch(self, *, start: str = "beginning", listed: dict[str, object] | None = None) -> Watch:
        return Watch(CTSettings(log_list="-", timeout=5, start=start), self.db, SITES,
                     logs=loglist.parse(listed or self.log.log_list(tiled=True), "lab"),
                     record=lambda *e: self.events.append(e))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with CTLog() as log:
        yield Lab(tmp_path, log)


def test_tile_path() -> None:
    assert [tile_path(n) for n in (0, 7, 999, 1000, 1234067)] == \
        ["000", "007", "999", "x001/000", "x001/x234/067"]


def test_tiled_log_full_and_partial_tiles(lab: Lab) -> None:
    lab.fill(300)
    rogue, _ = pki.make_leaf(lab.ca, ["shop.example.test"])
    lab.log.add_chain([rogue, lab.ca.cert])  # index 300: in the partial tile 1
    lab.fill(300)
    w = lab.watch()
    (res,) = w.poll()
    assert (res.from_size, res.to_size, res.entries, res.problem) == (0, 601, 601, "")
    assert [(e[0], e[3]["index"]) for e in lab.events] == [("shop", 300)]  # type: ignore[index]
    pre = make_precert(lab.ca.cert, lab.ca.key, ["shop.example.test"])  # type: ignore[arg-type]
    lab.log.add_pre_chain([pre, lab.ca.cert])
    lab.fill(5)
    (res,) = w.poll()  # from 601: the rest of partial tile 2 only
    assert (res.from_size, res.to_size, res.entries) == (601, 607, 6)
    assert lab.events[-1][3]["precert"] and lab.events[-1][3]["index"] == 601  # type: ignore[index]
    pos = positions.load(lab.db, base64.b64encode(lab.log.log_id).decode())
    assert pos is not None and pos.tree_size == 607


@pytest.mark.parametrize("size", [1, 255, 256, 600, 1025])
def test_start_at_the_end_from_hash_tiles(lab: Lab, size: int) -> None:
    lab.fill(size)
    w = lab.watch(start="end")
    (res,) = w.poll()
    assert (res.from_size, res.to_size, res.entries, res.problem) == (size, size, 0, "")
    rogue, _ = pki.make_leaf(lab.ca, ["shop.example.test"])
    lab.log.add_chain([rogue, lab.ca.cert])
    (res,) = w.poll()
    assert res.entries == 1 and [e[3]["index"] for e in lab.events] == [size]  # type: ignore[index]


def test_a_rewritten_tiled_log_is_not_trusted(lab: Lab) -> None:
    lab.fill(20)
    w = lab.watch()
    w.poll()
    c, _ = pki.make_leaf(lab.ca, ["elsewhere.example.org"])
    lab.log.rewrite(3, [c, lab.ca.cert])
    lab.fill(1)
    (res,) = w.poll()
    assert res.inconsistent and "do not hash to its signed root of size 21" in res.problem
    assert [str(e[1]) for e in lab.events] == ["ct_log_inconsistent"]
    pos = positions.load(lab.db, base64.b64encode(lab.log.log_id).decode())
    assert pos is not None and pos.tree_size == 20


def test_a_checkpoint_signed_by_another_key_is_refused(lab: Lab) -> None:
    lab.fill(3)
    other = CTLog()
    listed = lab.log.log_list(tiled=True)
    entry = listed["operators"][0]["tiled_logs"][0]
    entry["key"] = base64.b64encode(other.key_der).decode()
    entry["log_id"] = base64.b64encode(other.log_id).decode()
    (res,) = lab.watch(listed=listed).poll()
    assert "no signature by this log's key" in res.problem and res.to_size == 0
