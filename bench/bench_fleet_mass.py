"""Mass failover across a fleet (issue 12): N sites on 3 agent hosts, one PostgreSQL.

Setup (not timed in the headline): one real PostgreSQL (the lab's), two test CAs (test PKI, not
Pebble, for speed) and two certificates per site, one from each CA, every one sealed in the
database as controllers seal each certificate they store. Even sites are active on CA "a", odd
sites on CA "b". Three agents (own vault, own nginx serving all N sites on loopback, reloaded
by SIGHUP to the pid in its pid file after `nginx -t`, own database engine) stage, start nginx,
verify the initial state and prefetch their standbys (`Agent.prefetch`), as the agent's loop
does between incidents. `--no-prefetch`: the standbys are unsealed during the switch instead.

The incident: CA "a" is distrusted. The controller publishes, in ONE fenced transaction, the
CA-"b" certificate of the N/2 sites active on "a" (sealed, desired rows, one NOTIFY). The agents
run their normal loop (LISTEN/NOTIFY, poll 30 s as fallback). Measured:

  fleet       publish start -> every affected site reported verified by every host
              (controller polls `fleet_served` every 0.25 s; its queries are counted apart)
  publish     the controller's transaction alone (seal N/2 keys + desired + NOTIFY)
  reloads     apply() batches per server during the incident (goal <= 2)
  queries     SQL statements by the agents and the controller's publish during the incident
  client      a client loop per host: TLS handshakes to random affected sites throughout;
              failed = handshake errors (either certificate is a success: both are valid)
  cpu_s       CPU seconds in the fleet window: the machine ("busy") and per group (agents,
              bench = client loops + progress polls, haproxy/nginx, postgres, other);
              cores_busy = busy / fleet: at the machine's core count the run is CPU-bound
  baseline    the same switch on ONE host without any database: deploy.activate of the same
              N/2 sites back to CA "a" on host 1's nginx (journal, flip, one reload, verify)

Run: .venv/bin/python bench/bench_fleet_mass.py --sites 1000 [--sites 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.serialization import Encoding

from certfailover import deploy, keys
from certfailover.fleet import controller, coord, sealed
from certfailover.fleet.agent import Agent, AgentSite
from certfailover.fleet.coord import Leader
from certfailover.fleet.sealed import Kek, Keyring, Plain
from certfailover.probe import leaf_sha256, served_chain
from certfailover.servers import LiveChange, ServerAdapter, make_adapter
from certfailover.store import db as dbmod
from certfailover.store.vault import Vault
from certfailover_lab.pki import make_leaf
from certfailover_lab.postgres import PostgresServer
from certfailover_lab.webservers import (
    LabCA,
    VHost,
    WebServer,
    chain_validator,
    start_haproxy,
    start_nginx,
)

HOSTS = 3  # --hosts
SERVER = "nginx"  # --server haproxy: hot swaps over the Runtime API instead of one reload
PROCESSES = False  # --processes: each agent in its own process
PREFETCH = True  # --no-prefetch: standbys are unsealed inside the switch


@dataclass
class Counting:
    inner: ServerAdapter
    calls: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    def apply(self, changes: Sequence[LiveChange]) -> bool | None:
        self.calls.append(len(changes))
        return self.inner.apply(changes)


class Unused:
    name = "nginx"

    def apply(self, changes: Sequence[LiveChange]) -> None:
        raise AssertionError("staging never applies")


class Queries:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def watch(self, engine: sa.Engine) -> sa.Engine:
        @sa.event.listens_for(engine, "before_cursor_execute")
        def _count(*_: Any) -> None:
            with self.lock:
                self.n += 1
        return engine


def cpu_snapshot(agents: set[int]) -> dict[str, float]:
    """CPU seconds (user + system) so far: the whole machine ("busy", from /proc/stat) and per
    group of processes alive now: the agents (their pids), this bench (the client loops and
    the controller's progress polls), the web servers, PostgreSQL, everything else."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq = (int(x) for x in fields[:7])
    out = {"busy": (user + nice + system + irq + softirq) / tick, "idle": (idle + iowait) / tick}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue  # gone between listing and reading
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2:].split()
        used = (int(rest[11]) + int(rest[12])) / tick  # utime, stime
        pid = int(d.name)
        group = ("agents" if pid in agents else "bench" if pid == os.getpid()
                 else comm if comm in ("haproxy", "nginx", "postgres") else "other")
        out[group] = out.get(group, 0.0) + used
    return out


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per group between two snapshots (processes that ended in between are not
    counted in their group, only in "busy")."""
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 1) for k in after}


def agent_process(agent: Agent, adapter: Counting, url: str, stop: Any, out: Any) -> None:
    """A forked agent host: its own engine and loop; reports its numbers, then leaves without
    running the parent's finalizers (the parent's database connections are not ours)."""
    try:
        queries = Queries()
        agent.engine = queries.watch(coord.make_engine(url, agent.host))
        agent.run(url, stop, poll=30.0)
        last = agent.last_switch
        out.put({"host": agent.host, "server": adapter.name, "reloads": len(adapter.calls),
                 "queries": queries.n,
                 "phases": {k: round(v, 2) for k, v in last.seconds.items()} if last else {}})
        out.close()
        out.join_thread()
    finally:
        os._exit(0)


def certs_for(n: int, cas: dict[str, LabCA]) -> dict[tuple[str, str], controller.Desired]:
    out = {}
    for i in range(n):
        site = f"s{i:05d}"
        for name, ca in cas.items():
            leaf, key = make_leaf(ca.intermediate, [f"{site}.test"])
            serial = format(leaf.serial_number, "x")
            out[(site, name)] = controller.Desired(
                site, f"{site}/{name}/{serial}", leaf_sha256(leaf),
                Plain(leaf.public_bytes(Encoding.PEM),
                      ca.intermediate.cert.public_bytes(Encoding.PEM), keys.key_pem(key)))
    return out


def client_loop(server: WebServer, sites: list[str], stop: threading.Event,
                out: dict[str, int]) -> None:
    rng = random.Random(1)
    while not stop.is_set():
        site = rng.choice(sites)
        try:
            served_chain(server.endpoint, f"{site}.test", timeout=5.0)
            out["ok"] += 1
        except Exception:  # noqa: BLE001 - every failure counts
            out["failed"] += 1
        time.sleep(0.01)


def run(n: int, tmp: Path, pg: PostgresServer) -> dict[str, Any]:
    t_setup = time.monotonic()
    url = pg.create_database(f"mass_{n}_{os.getpid()}")
    dbmod.Database(url).migrate()
    ring = Keyring(Kek(os.urandom(32)))
    cas = {"a": LabCA.create("a"), "b": LabCA.create("b")}
    t0 = time.monotonic()
    certs = certs_for(n, cas)
    make_certs = time.monotonic() - t0
    sites = [f"s{i:05d}" for i in range(n)]
    affected = sites[0::2]  # active on "a"
    initial = [certs[(s, "a" if i % 2 == 0 else "b")] for i, s in enumerate(sites)]
    leader = Leader(url, holder="controller-1")
    assert leader.try_lead()
    with leader.fenced() as conn:
        controller.publish(conn, ring, initial, epoch=leader.epoch or 0)
        if PREFETCH:  # every standby sealed too (controllers seal what they store)
            active = {d.cert_id for d in initial}
            sealed.seal_many(conn, ring, [(d.cert_id, d.site, d.plain) for d in certs.values()
                                          if d.cert_id not in active])
    validate = chain_validator([c.root.cert for c in cas.values()])
    queries = Queries()
    hosts: list[tuple[Agent, WebServer, Counting]] = []
    try:
        return _incident(n, url, ring, cas, certs, sites, affected, leader, validate, queries,
                         hosts, tmp, make_certs, t_setup)
    finally:
        for agent, srv, _ in hosts:
            srv.stop()
            agent.engine.dispose()
        leader.release()


def _incident(n: int, url: str, ring: Keyring, cas: dict[str, LabCA],
              certs: dict[tuple[str, str], controller.Desired], sites: list[str],
              affected: list[str], leader: Leader, validate: deploy.Validate, queries: Queries,
              hosts: list[tuple[Agent, WebServer, Counting]], tmp: Path, make_certs: float,
              t_setup: float) -> dict[str, Any]:
    t0 = time.monotonic()
    for h in range(HOSTS):
        name = f"web{h + 1}"
        vault = Vault(tmp / name / "vault")
        staging = Agent(name, coord.make_engine(url, name), ring, vault,
                        {"nginx": Unused()}, [AgentSite(s, "nginx", (), f"{s}.test")
                                              for s in sites], validate=validate)
        staging.start()
        staging.stage()
        staging.engine.dispose()
        vhosts = [VHost(f"{s}.test", (vault.live_path(s),)) for s in sites]
        srv = start_haproxy(tmp / name / "haproxy", vhosts) if SERVER == "haproxy" else \
            start_nginx(tmp / name / "nginx", vhosts, pid_file=True)
        adapter = Counting(make_adapter(srv.spec))
        agent = Agent(name, queries.watch(coord.make_engine(url, name)), ring, vault,
                      {"nginx": adapter},
                      [AgentSite(s, "nginx", (srv.endpoint,), f"{s}.test") for s in sites],
                      validate=validate, verify_timeout=600.0, settle=0.3)
        hosts.append((agent, srv, adapter))
    stage_start = time.monotonic() - t0
    t0 = time.monotonic()
    def prove(agent: Agent) -> None:  # the initial state proven on every host
        agent.start()
        r = agent.sync()
        assert len(r.changed) == n and not r.failed, r.failed
        while PREFETCH and agent.prefetch(5000)[0]:
            pass

    starts = [threading.Thread(target=prove, args=(agent,)) for agent, _, _ in hosts]
    for t in starts:
        t.start()
    for t in starts:
        t.join()
    assert all(len(a.verified) == n for a, _, _ in hosts)
    initial_verify = time.monotonic() - t0
    if PREFETCH:
        for agent, _, _ in hosts:
            missing = [s for s in affected if not (agent.vault.archive_dir(
                *certs[(s, "b")].cert_id.split("/")) / "privkey.pem").is_file()]
            assert not missing, f"{agent.host}: standbys not prefetched: {missing[:3]}"
    for _, _, adapter in hosts:
        adapter.calls.clear()
    setup = time.monotonic() - t_setup

    stop = threading.Event()
    counts = [{"ok": 0, "failed": 0} for _ in hosts]
    clients = [threading.Thread(target=client_loop, args=(srv, affected, stop, counts[i]))
               for i, (_, srv, _) in enumerate(hosts)]
    loops: list[threading.Thread] = []
    procs: list[Any] = []
    if PROCESSES:  # one process per agent, as on real hosts (no GIL shared between agents)
        ctx = multiprocessing.get_context("fork")
        pstop, results = ctx.Event(), ctx.Queue()
        for agent, _, _ in hosts:
            agent.engine.dispose()
        procs = [ctx.Process(target=agent_process, args=(agent, adapter, url, pstop, results))
                 for agent, _, adapter in hosts]
        for p in procs:
            p.start()
    else:
        loops = [threading.Thread(target=agent.run, args=(url, stop), kwargs={"poll": 30.0})
                 for agent, _, _ in hosts]
    for t in (*loops, *clients):
        t.start()
    time.sleep(1.0)  # the agents are listening
    queries.n = 0
    progress_engine = coord.make_engine(url, "progress")
    agent_pids = {p.pid for p in procs}
    cpu0 = cpu_snapshot(agent_pids)
    want = {s: certs[(s, "b")].sha256 for s in affected}
    t0 = time.monotonic()
    with leader.fenced() as conn:
        controller.publish(conn, ring, [certs[(s, "b")] for s in affected],
                           epoch=leader.epoch or 0)
    publish = time.monotonic() - t0
    polls = 0
    while True:
        views = controller.progress(progress_engine)
        polls += 1
        done = sum(1 for v in views if v.site in want and v.served == want[v.site])
        if done == len(want) * HOSTS:
            break
        if time.monotonic() - t0 > 1800:
            raise SystemExit(f"not converged after 1800 s: {done}/{len(want) * HOSTS}")
        time.sleep(0.25)
    fleet = time.monotonic() - t0
    cpu = cpu_used(cpu0, cpu_snapshot(agent_pids))
    agent_queries = queries.n
    phases = {a.host: {k: round(v, 2) for k, v in a.last_switch.seconds.items()}
              for a, _, _ in hosts if a.last_switch is not None}
    time.sleep(0.5)
    stop.set()
    reloads = {srv.spec["name"]: len(adapter.calls) for _, srv, adapter in hosts}
    if procs:
        pstop.set()
        got = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(60)
        phases = {g["host"]: g["phases"] for g in got}
        agent_queries = sum(g["queries"] for g in got)
        reloads = {g["server"]: g["reloads"] for g in got}
        for agent, _, _ in hosts:  # the parent's engines, for the baseline and clean-up
            agent.engine = coord.make_engine(url, agent.host)
    for t in (*loops, *clients):
        t.join(120)
    # every host proves it by handshake (sampled here; the agents probed every site)
    for _, srv, _ in hosts:
        for s in random.Random(2).sample(affected, min(50, len(affected))):
            assert leaf_sha256(served_chain(srv.endpoint, f"{s}.test")[0]) == want[s]

    # baseline: the same switch on one host, no database (back to "a" on host 1)
    agent, srv, adapter = hosts[0]
    vault = agent.vault
    batch = [deploy.Activation(site=s, target=vault.archive_dir(*certs[(s, "a")].cert_id
                                                                .split("/")),
                               expected_sha256=certs[(s, "a")].sha256,
                               endpoints=(srv.endpoint,), sni=f"{s}.test") for s in affected]
    t0 = time.monotonic()
    switched = deploy.activate(vault, adapter, batch, validate=validate, verify_timeout=600.0,
                               settle=0.3)
    baseline = time.monotonic() - t0
    assert all(r.ok for r in switched)
    progress_engine.dispose()
    return {
        "sites": n, "affected": len(affected), "hosts": HOSTS, "server": SERVER,
        "prefetched": PREFETCH,
        "fleet_s": round(fleet, 2), "publish_s": round(publish, 2),
        "baseline_single_host_s": round(baseline, 2), "ratio": round(fleet / baseline, 2),
        "reloads_per_server": reloads, "agent_queries": agent_queries,
        "agent_phases_s": phases,
        "controller_progress_polls": polls,
        # CPU seconds spent during the fleet window, and the cores that means on average
        "cpu_s": cpu, "cores_busy": round(cpu["busy"] / fleet, 2), "cpus": os.cpu_count(),
        "client_handshakes": [c["ok"] for c in counts],
        "client_failed": [c["failed"] for c in counts],
        "setup_s": round(setup, 1), "make_certs_s": round(make_certs, 1),
        "stage_and_start_s": round(stage_start, 1), "initial_verify_s": round(initial_verify, 1),
    }


def main() -> int:
    # SIGTERM unwinds like an exception: the lab's PostgreSQL and the nginx servers are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sites", type=int, action="append")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--processes", action="store_true",
                    help="run each agent in its own process (default: threads of this one)")
    ap.add_argument("--no-prefetch", action="store_true",
                    help="standbys not sealed nor prefetched ahead: unsealed in the switch")
    ap.add_argument("--hosts", type=int, default=3,
                    help="agent hosts (1: the time each host takes when hosts have their own "
                         "cores, which this one machine's shared cores are not)")
    ap.add_argument("--server", choices=("nginx", "haproxy"), default="nginx")
    args = ap.parse_args()
    global PROCESSES, PREFETCH, HOSTS, SERVER
    PROCESSES, PREFETCH = args.processes, not args.no_prefetch
    HOSTS, SERVER = args.hosts, args.server
    out = []
    with PostgresServer() as pg:
        for n in args.sites or [1000]:
            with tempfile.TemporaryDirectory(prefix="cf-mass-") as tmp:
                r = run(n, Path(tmp), pg)
            out.append(r)
            if not args.json:
                print(json.dumps(r), flush=True)
    if args.json:
        json.dump({"python": platform.python_version(), "cpus": os.cpu_count(),
                   "agents_in_processes": PROCESSES, "runs": out},
                  sys.stdout, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
