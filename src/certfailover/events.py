"""Every event kind certfailover records, with the severity an operator sees and what it means.

The one home of the kinds: the engine, the daemon and the CLI emit `EventKind` members (a
`StrEnum`, so the stored and notified kind is the plain string), notifiers filter and label by
`severity`, and `[notify] kinds` is checked against `KINDS`. A test scans the source for
emitted kinds and fails on one missing here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = ["CRITICAL", "INFO", "KINDS", "SEVERITIES", "WARNING", "EventKind", "KindInfo",
           "severity"]

INFO = "info"
WARNING = "warning"
CRITICAL = "critical"
SEVERITIES: tuple[str, ...] = (INFO, WARNING, CRITICAL)


class EventKind(StrEnum):
    FAILOVER = "failover"
    ROLLBACK = "rollback"
    NONE_HEALTHY = "none_healthy"
    STANDBY_MISSING = "standby_missing"
    DISTRUST_FORECAST = "distrust_forecast"
    ISSUANCE_FAILED = "issuance_failed"
    CA_UNREACHABLE = "ca_unreachable"
    SIGNAL_UNKNOWN = "signal_unknown"
    ACTIVATED = "activated"
    ISSUED = "issued"
    RETIRED = "retired"
    DEPLOY_FAILED = "deploy_failed"
    REVOKED = "revoked"
    STANDBY_UNUSABLE = "standby_unusable"
    SHORT_LIFETIME = "short_lifetime"
    CA_CANNOT_ISSUE = "ca_cannot_issue"
    SITE_ERROR = "site_error"
    LOCK_LOST = "lock_lost"
    REMOVED = "removed"
    RECONCILED = "reconciled"
    TRUST_UPDATED = "trust_updated"
    TRUST_UPDATE_FAILED = "trust_update_failed"
    IMPORTED = "imported"
    DISTRUST = "distrust"
    FLEET_NOT_CONVERGED = "fleet_not_converged"
    UNEXPECTED_CERTIFICATE = "unexpected_certificate"
    CT_LOG_INCONSISTENT = "ct_log_inconsistent"
    CAA_FORBIDS = "caa_forbids"
    CHAIN_SWITCH = "chain_switch"


@dataclass(frozen=True)
class KindInfo:
    severity: str
    description: str


_K = EventKind
KINDS: MappingProxyType[EventKind, KindInfo] = MappingProxyType({
    _K.FAILOVER: KindInfo(WARNING, "switched to a standby (automatic, but a human should know why)"),
    _K.ROLLBACK: KindInfo(CRITICAL, "a switch could not be verified and was undone"),
    _K.NONE_HEALTHY: KindInfo(CRITICAL, "no certificate of the site is healthy"),
    _K.STANDBY_MISSING: KindInfo(WARNING, "the site has no healthy standby from an independent CA"),
    _K.DISTRUST_FORECAST: KindInfo(WARNING, "a root program will stop trusting a cert we keep"),
    _K.ISSUANCE_FAILED: KindInfo(WARNING, "a CA refused or failed to issue"),
    _K.CA_UNREACHABLE: KindInfo(WARNING, "a CA has been unreachable for longer than the threshold"),
    _K.SIGNAL_UNKNOWN: KindInfo(WARNING, "a revocation/trust signal has been unknown for long"),
    _K.ACTIVATED: KindInfo(INFO, "first activation of a certificate for a site"),
    _K.ISSUED: KindInfo(INFO, "a new certificate was issued"),
    _K.RETIRED: KindInfo(INFO, "a certificate left the rotation (expired, replaced)"),
    _K.DEPLOY_FAILED: KindInfo(CRITICAL, "a switch failed and could not be verified or rolled back"),
    _K.REVOKED: KindInfo(WARNING, "a verified revocation was recorded: the certificate is never "
                                  "served again"),
    _K.STANDBY_UNUSABLE: KindInfo(CRITICAL, "a CA's new certificates fail their checks: backed off"),
    _K.SHORT_LIFETIME: KindInfo(WARNING, "a certificate lives too short for the schedule to "
                                         "protect it"),
    _K.CA_CANNOT_ISSUE: KindInfo(WARNING, "a required root program would not trust a new cert "
                                          "from a CA"),
    _K.SITE_ERROR: KindInfo(CRITICAL, "a site's step failed unexpectedly (other sites go on)"),
    _K.LOCK_LOST: KindInfo(CRITICAL, "the daemon lost the store's lock and stopped"),
    _K.REMOVED: KindInfo(INFO, "the operator retired a certificate (`certfailover remove`); "
                               "files kept"),
    _K.RECONCILED: KindInfo(WARNING, "after a crash the store was made to agree with the live "
                                     "link (the served certificate changed outside a tick)"),
    _K.TRUST_UPDATED: KindInfo(INFO, "the root-program data was refreshed from upstream"),
    _K.TRUST_UPDATE_FAILED: KindInfo(WARNING, "a root-program data refresh failed; the current "
                                              "data is kept"),
    _K.IMPORTED: KindInfo(INFO, "the operator imported a certificate (`certfailover import`)"),
    _K.DISTRUST: KindInfo(WARNING, "a CA was distrusted, everywhere or for one site "
                                   "(`certfailover distrust`, or the CT watch)"),
    _K.FLEET_NOT_CONVERGED: KindInfo(CRITICAL, "a fleet host does not serve a site's new "
                                               "certificate in time (docs/fleet.md)"),
    _K.UNEXPECTED_CERTIFICATE: KindInfo(CRITICAL, "a CT log holds a certificate for a site's "
                                                  "name that certfailover did not obtain or import"),
    _K.CAA_FORBIDS: KindInfo(WARNING, "CAA does not permit a site's CA (or its account or "
                                      "challenge): that standby cannot be issued or renewed; no "
                                      "order goes to it"),
    _K.CHAIN_SWITCH: KindInfo(WARNING, "the served chain lost a required root program or trust "
                                       "bundle: the same certificate now serves another chain "
                                       "(verified by handshake; docs/chains.md)"),
    _K.CT_LOG_INCONSISTENT: KindInfo(CRITICAL, "a CT log's tree head does not extend the one it "
                                               "signed before (a forked or rewritten log): not "
                                               "trusted"),
})

assert set(KINDS) == set(EventKind), "every EventKind has a severity and a description"


def severity(kind: str) -> str:
    """The severity of `kind`; a kind not in KINDS (an old store's event) is "warning", never
    silently "info"."""
    try:
        return KINDS[EventKind(kind)].severity
    except ValueError:
        return WARNING
