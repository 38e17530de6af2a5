"""One exception tree for certfailover.

    CertFailoverError                 base: every error the tool raises on purpose
    ├── ConfigError                   bad config: names file, table and key
    ├── InputError                    bad PEM / file given by the operator: names the file
    ├── StoreError                    vault or database problem
    ├── LockError                     another daemon holds the store: names the store and holder
    ├── IssuanceError                 an ACME CA refused or failed
    │   └── TransientIssuanceError    worth retrying later (badNonce, 5xx, refused connection)
    ├── ServerError                   web server adapter failed
    │   └── ServerConfigError         config test failed (e.g. `nginx -t`)
    ├── FetchError                    bounded HTTP fetch failed: names the URL
    └── TrustDataError                root-program data could not be parsed: names the source

Findings (health results) are data, never exceptions.
"""

from __future__ import annotations


class CertFailoverError(Exception):
    """Base of every error certfailover raises on purpose."""


class ConfigError(CertFailoverError):
    def __init__(self, file: str, where: str, message: str) -> None:
        self.file, self.where, self.message = file, where, message
        super().__init__(f"{file}: {where}: {message}" if where else f"{file}: {message}")


class InputError(CertFailoverError):
    pass


class StoreError(CertFailoverError):
    pass


class OrderInFlight(StoreError):
    """An order for the same site and CA is pending already (maybe placed by another fleet
    controller): this one is not placed."""


class LockError(CertFailoverError):
    """Another certfailover daemon holds the store (one daemon per store)."""

    def __init__(self, where: str, holder: str) -> None:
        self.where, self.holder = where, holder
        super().__init__(f"another certfailover daemon ({holder}) holds {where}; stop it first")


class IssuanceError(CertFailoverError):
    pass


class TransientIssuanceError(IssuanceError):
    pass


class ServerError(CertFailoverError):
    pass


class ServerConfigError(ServerError):
    pass


class FetchError(CertFailoverError):
    def __init__(self, url: str, message: str) -> None:
        self.url, self.reason = url, message
        super().__init__(f"{url}: {message}")


class TrustDataError(CertFailoverError):
    pass
