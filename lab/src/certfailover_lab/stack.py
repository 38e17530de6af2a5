"""A Pebble CA plus the status service that publishes its revocations (OCSP, CRL, ARI).

Pebble 2.4 serves none of these; the status service signs them with the CA's own intermediate
key from Pebble's management API, so revocation reaches certfailover through the channels it
uses in production. The status service's port is chosen first because Pebble writes the OCSP
URL into every certificate it issues.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Self

from .pebble import PebbleCA
from .ports import free_port
from .sites import LabCAEntry
from .status import StatusService, ocsp_url_at


class RevocableCA:
    def __init__(self, workdir: Path, *, name: str, http_port: int, dns_server: str | None,
                 ocsp: bool = True, ocsp_validity: timedelta = timedelta(seconds=2),
                 crl_validity: timedelta = timedelta(seconds=2),
                 nonce_reject_percent: int | None = None,
                 validity_seconds: int | None = None) -> None:
        self.name = name
        port = free_port()
        self.pebble = PebbleCA(workdir, name=name, http_port=http_port, dns_server=dns_server,
                               ocsp_url=ocsp_url_at(port) if ocsp else None,
                               nonce_reject_percent=nonce_reject_percent,
                               validity_seconds=validity_seconds)
        try:
            self.status = StatusService(name, self.pebble.management_url, self.pebble.ca_bundle,
                                        port=port, ocsp_validity=ocsp_validity,
                                        crl_validity=crl_validity, retry_after=1).start()
        except BaseException:
            self.pebble.stop()
            raise

    def entry(self, *, crl: bool = True, ari: bool = True) -> LabCAEntry:
        """How a certfailover config names this CA (Pebble's CRL signer lacks cRLSign)."""
        return LabCAEntry(self.name, self.pebble.directory_url, self.pebble.ca_bundle,
                          crl_urls=(self.status.crl_url,) if crl else (),
                          ari_url=self.status.ari_url if ari else None, crl_sign_required=False)

    def stop(self) -> None:
        self.status.stop()
        self.pebble.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
