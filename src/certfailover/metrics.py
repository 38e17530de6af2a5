"""Prometheus metrics on a private CollectorRegistry, and a small /metrics HTTP endpoint.

Metrics (all prefixed certfailover_):

    cert_expiry_seconds{site,cert_id,ca}          seconds until notAfter (negative: expired)
    cert_not_after_timestamp_seconds{site,cert_id,ca}   notAfter as a Unix time
    cert_health{site,cert_id,ca}                  0 ok, 1 warn, 2 fail
    cert_trusted{site,cert_id,ca,program}         1 trusted in the root program, 0 not
    cert_active{site,cert_id,ca}                  1 for the certificate being served
    failovers_total{site}                         counter of failovers
    standbys_healthy{site}                        healthy standbys of the site
    issuance_errors_total{ca}                     counter of failed issuances per CA
    last_check_timestamp_seconds                  Unix time of the last completed check round
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

from .errors import CertFailoverError

__all__ = [
    "CONTENT_TYPE", "HEALTH_VALUES", "Metrics", "MetricsServer", "parse_listen",
]

#: what generate_latest() writes (the classic text format; every Prometheus version reads it)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HEALTH_VALUES: dict[str, int] = {"ok": 0, "warn": 1, "fail": 2}
_CERT_LABELS = ("site", "cert_id", "ca")


def parse_listen(text: str) -> tuple[str, int]:
    """ "127.0.0.1:9786", "[::1]:9786" or "localhost:9786" -> (host, port); ValueError if not.
    (config.load reads `[metrics] listen` with it; `run --metrics-listen` too.)"""
    host, sep, port_s = text.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ValueError(f"{text!r} must be host:port (IPv6 as [::1]:port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: bad IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:9786")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port out of range")
    return host, port


def _aware(ts: datetime, what: str) -> datetime:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime (UTC), got {ts!r}")
    return ts


@dataclass(frozen=True)
class _CertLabels:
    site: str
    ca: str
    programs: frozenset[str]


class Metrics:
    """All certfailover metrics. Thread-safe: the daemon updates while /metrics is scraped."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self._expiry = Gauge("certfailover_cert_expiry_seconds",
                             "Seconds until the certificate's notAfter (negative once expired).",
                             _CERT_LABELS, registry=r)
        self._not_after = Gauge("certfailover_cert_not_after_timestamp_seconds",
                                "The certificate's notAfter as a Unix timestamp.",
                                _CERT_LABELS, registry=r)
        self._health = Gauge("certfailover_cert_health",
                             "Worst finding of the certificate: 0 ok, 1 warn, 2 fail.",
                             _CERT_LABELS, registry=r)
        self._trusted = Gauge("certfailover_cert_trusted",
                              "1 if the certificate's chain is trusted by the root program.",
                              (*_CERT_LABELS, "program"), registry=r)
        self._active = Gauge("certfailover_cert_active",
                             "1 for the certificate the site serves, 0 for a standby.",
                             _CERT_LABELS, registry=r)
        self._failovers = Counter("certfailover_failovers",
                                  "Failovers to a standby certificate.", ("site",), registry=r)
        self._standbys = Gauge("certfailover_standbys_healthy",
                               "Healthy standby certificates of the site.", ("site",), registry=r)
        self._issuance_errors = Counter("certfailover_issuance_errors",
                                        "Failed issuance attempts per CA.", ("ca",), registry=r)
        self._last_check = Gauge("certfailover_last_check_timestamp_seconds",
                                 "Unix time of the last completed check round.", registry=r)
        self._certs: dict[str, _CertLabels] = {}
        self._lock = threading.Lock()

    def observe_cert(
        self,
        *,
        site: str,
        cert_id: str,
        ca: str,
        not_after: datetime,
        now: datetime,
        severity: str,
        active: bool,
        programs: Mapping[str, bool],
    ) -> None:
        """Record one certificate's state; `severity` is "ok", "warn" or "fail"."""
        if severity not in HEALTH_VALUES:
            raise ValueError(f"severity {severity!r}: expected one of {', '.join(HEALTH_VALUES)}")
        _aware(not_after, "not_after")
        _aware(now, "now")
        labels = (site, cert_id, ca)
        with self._lock:
            old = self._certs.get(cert_id)
            if old is not None and (old.site, old.ca) != (site, ca):
                self._remove_locked(cert_id, old)
                old = None
            if old is not None:
                for program in old.programs - set(programs):
                    self._trusted.remove(site, cert_id, ca, program)
            self._expiry.labels(*labels).set((not_after - now).total_seconds())
            self._not_after.labels(*labels).set(not_after.timestamp())
            self._health.labels(*labels).set(HEALTH_VALUES[severity])
            self._active.labels(*labels).set(1 if active else 0)
            for program, trusted in programs.items():
                self._trusted.labels(*labels, program).set(1 if trusted else 0)
            self._certs[cert_id] = _CertLabels(site, ca, frozenset(programs))
            # a site's counter starts at 0 so rate() and alerts see the series from the start
            self._failovers.labels(site)

    def forget_cert(self, cert_id: str) -> None:
        """Drop every series of a retired certificate (unknown ids are ignored)."""
        with self._lock:
            old = self._certs.get(cert_id)
            if old is not None:
                self._remove_locked(cert_id, old)

    def _remove_locked(self, cert_id: str, old: _CertLabels) -> None:
        labels = (old.site, cert_id, old.ca)
        for gauge in (self._expiry, self._not_after, self._health, self._active):
            gauge.remove(*labels)
        for program in old.programs:
            self._trusted.remove(*labels, program)
        del self._certs[cert_id]

    def inc_failover(self, site: str) -> None:
        self._failovers.labels(site).inc()

    def set_standbys_healthy(self, site: str, n: int) -> None:
        if n < 0:
            raise ValueError(f"standbys_healthy for {site}: {n} < 0")
        self._standbys.labels(site).set(n)

    def inc_issuance_error(self, ca: str) -> None:
        self._issuance_errors.labels(ca).inc()

    def set_last_check(self, ts: datetime) -> None:
        self._last_check.set(_aware(ts, "last check time").timestamp())

    def render(self) -> bytes:
        """The Prometheus text exposition format (version 0.0.4)."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> MetricsServer:
        """Serve GET /metrics on host:port (port 0: a free one) in a daemon thread."""
        return MetricsServer.start(self, host, port)


class ListenError(CertFailoverError, OSError):
    """The metrics address cannot be bound (in use, not local, no permission): names it.
    An OSError (as before) and a CertFailoverError (a clean message, not a traceback)."""

    def __str__(self) -> str:
        return str(self.strerror)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: Metrics


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/metrics":
            self._reply(404, b"not found: try /metrics\n", "text/plain; charset=utf-8")
            return
        self._reply(200, self.server.metrics.render(), CONTENT_TYPE)

    def _reply(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        pass


class MetricsServer:
    """A running /metrics endpoint: `.host`, `.port`, `.url`, `.stop()`."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread
        addr = server.server_address
        self.host: str = str(addr[0])
        self.port: int = int(addr[1])

    @classmethod
    def start(cls, metrics: Metrics, host: str, port: int) -> MetricsServer:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(_Server):
            address_family = family

        try:
            server = Server((host, port), _Handler)
        except OSError as exc:
            raise ListenError(exc.errno, f"metrics: cannot listen on {host}:{port}: "
                              f"{exc.strerror} (is another process using it? choose another "
                              "--metrics-listen or [metrics] listen)") from None
        server.metrics = metrics
        thread = threading.Thread(target=server.serve_forever, name="certfailover-metrics",
                                  daemon=True)
        thread.start()
        return cls(server, thread)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
