"""Coordination on a real PostgreSQL: one leader (advisory lock + fenced epoch), shared work by
SKIP LOCKED leases, LISTEN/NOTIFY, and everyone reconnecting after a database restart."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import count

import pytest
import sqlalchemy as sa

from certfailover.errors import StoreError
from certfailover.fleet import coord
from certfailover.fleet.coord import Deadlines, Fenced, Leader, Leases, Listener
from certfailover.store import db as dbmod
from certfailover_lab.postgres import PostgresServer

pytestmark = pytest.mark.integration
_n = count(1)
FAST = Deadlines(connect=2, statement=5, lock=2)


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    u = postgres.create_database(f"fleet_coord_{next(_n)}")
    dbmod.Database(u).migrate()
    return u


def kill_session(url: str, pid: int) -> None:
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    eng.dispose()


def epoch_row(url: str) -> tuple[int, str]:
    eng = sa.create_engine(url)
    with eng.connect() as conn:
        row = conn.execute(sa.select(dbmod.fleet_epoch.c.epoch, dbmod.fleet_epoch.c.holder)).one()
    eng.dispose()
    return int(row[0]), str(row[1])


def test_two_controllers_contend_one_leads_the_other_takes_over(url: str) -> None:
    a = Leader(url, holder="ctl-a", deadlines=FAST)
    b = Leader(url, holder="ctl-b", deadlines=FAST)
    try:
        assert a.try_lead() is True and a.held and a.epoch == 1
        assert b.try_lead() is False and not b.held and b.epoch is None
        assert a.try_lead() is True and a.epoch == 1  # still the leader: same epoch
        pid = a.session_pid()
        assert pid is not None
        kill_session(url, pid)  # controller a dies: its session, and the lock, end
        deadline = time.monotonic() + 10
        while not b.try_lead():
            assert time.monotonic() < deadline, "b never took over"
            time.sleep(0.1)
        assert b.epoch == 2 and epoch_row(url) == (2, "ctl-b")
        assert not a.held
    finally:
        a.release()
        b.release()


def test_a_stale_leaders_fenced_write_is_refused(url: str) -> None:
    a = Leader(url, holder="ctl-a", deadlines=FAST)
    b = Leader(url, holder="ctl-b", deadlines=FAST)
    eng = sa.create_engine(url)
    try:
        assert a.try_lead()
        with a.fenced() as conn:  # the leader writes
            conn.execute(dbmod.distrust.insert().values(ca="x", since=datetime.now(UTC),
                                                        reason="by a"))
        pid = a.session_pid()
        assert pid is not None
        kill_session(url, pid)
        deadline = time.monotonic() + 10
        while not b.try_lead():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # a does not know yet that it lost the lead: its next write is refused, nothing lands
        with pytest.raises(Fenced, match="epoch 1"), a.fenced() as conn:
            conn.execute(dbmod.distrust.insert().values(ca="y", since=datetime.now(UTC),
                                                        reason="by stale a"))
        with b.fenced() as conn:
            conn.execute(dbmod.distrust.insert().values(ca="z", since=datetime.now(UTC),
                                                        reason="by b"))
        with eng.connect() as conn:
            assert sorted(conn.execute(sa.select(dbmod.distrust.c.ca)).scalars()) == ["x", "z"]
        with pytest.raises(Fenced, match="never led"), Leader(url, holder="c").fenced():
            pass
    finally:
        a.release()
        b.release()
        eng.dispose()


def test_leases_split_work_and_each_issuance_happens_once(url: str) -> None:
    sites = [f"site{i:03d}" for i in range(60)]
    engines = [coord.make_engine(url, f"ctl-{i}", FAST) for i in range(3)]
    database = dbmod.Database(url)
    claimed: Counter[str] = Counter()
    lock = threading.Lock()

    def controller(i: int) -> None:
        leases = Leases(engines[i], holder=f"ctl-{i}")
        for _ in range(40):
            got = leases.claim([f"issue:{s}" for s in sites], ttl=30, limit=7)
            if not got:
                break
            for work in got:  # under the lease: re-check the store, then issue if still needed
                site = work.split(":", 1)[1]
                if not database.orders(ca=site):
                    database.start_order(site, site, datetime.now(UTC))
                    with lock:
                        claimed[f"ctl-{i}"] += 1
                    time.sleep(0.005)
            # leases are kept (not released): the work is done, it must not be taken again
    threads = [threading.Thread(target=controller, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    per_site = Counter(o.site for o in database.orders())
    assert sorted(per_site) == sites and set(per_site.values()) == {1}  # once, all of them
    assert sum(claimed.values()) == 60 and len(claimed) >= 2  # the work was shared
    for e in engines:
        e.dispose()


def test_an_expired_or_released_lease_is_taken_by_another(url: str) -> None:
    eng = coord.make_engine(url, "t", FAST)
    a, b = Leases(eng, "a"), Leases(eng, "b")
    assert a.claim(["w1", "w2"], ttl=0.5) == ["w1", "w2"]
    assert b.claim(["w1", "w2"]) == []
    a.release(["w2"])
    assert b.claim(["w1", "w2"]) == ["w2"]
    assert a.renew(["w1", "w2"], ttl=0.5) == ["w1"]  # w2 is b's now
    time.sleep(0.7)
    assert a.renew(["w1"]) == []  # expired: renewing does not bring it back
    assert b.claim(["w1"]) == ["w1"] and a.held() == [] and b.held() == ["w1", "w2"]
    eng.dispose()


def test_notify_reaches_a_listener_at_commit_only(url: str) -> None:
    listener = Listener(url, deadlines=FAST)
    eng = coord.make_engine(url, "writer", FAST)
    try:
        assert listener.wait(0.1) == []
        with eng.begin() as conn:
            coord.notify(conn, "www")
            coord.notify(conn, "api")
            assert listener.wait(0.3) == []  # not before the commit
        t0 = time.monotonic()
        assert sorted(listener.wait(5)) == ["api", "www"]
        assert time.monotonic() - t0 < 1
    finally:
        listener.close()
        eng.dispose()


def test_statement_deadline_bounds_a_blocked_query(url: str) -> None:
    eng = coord.make_engine(url, "slow", Deadlines(connect=2, statement=0.5, lock=0.3))
    t0 = time.monotonic()
    with pytest.raises(sa.exc.OperationalError), eng.connect() as conn:
        conn.execute(sa.text("SELECT pg_sleep(5)"))
    assert time.monotonic() - t0 < 2
    eng.dispose()


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def test_postgresql_restarted_everyone_reconnects(own_server: PostgresServer) -> None:
    url = own_server.create_database("restart")
    dbmod.Database(url).migrate()
    leader = Leader(url, holder="ctl-a", deadlines=FAST)
    listener = Listener(url, deadlines=FAST)
    eng = coord.make_engine(url, "writer", FAST)
    leases = Leases(eng, "ctl-a")
    try:
        assert leader.try_lead() and leader.epoch == 1
        assert listener.wait(0.1) == [] and leases.claim(["w"], ttl=600) == ["w"]
        own_server.restart(down=0.5)
        assert not leader.held  # the session died with the server: the lead is given up
        with pytest.raises(StoreError):  # the listener notices the lost connection...
            listener.wait(0.5)
        assert listener.wait(0.1) == [Listener.RECONNECTED]  # ...and is back on the next call
        assert leader.try_lead() and leader.epoch == 2  # re-taken, with a new epoch
        with leader.fenced() as conn:  # pooled connections were replaced (pre-ping)
            coord.notify(conn, "after-restart")
        assert listener.wait(5) == ["after-restart"]
        assert leases.held() == ["w"]  # nothing lost: the lease row survived
    finally:
        leader.release()
        listener.close()
        eng.dispose()
