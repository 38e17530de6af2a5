"""Chrome stable versions and their release dates (for version-gated constraints).

Known stable dates are listed; later versions are estimated on Chrome's 4-week cadence.
An operator can always pass an explicit version instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_KNOWN: dict[int, datetime] = {
    v: datetime(y, m, d, tzinfo=UTC)
    for v, (y, m, d) in {
        126: (2024, 6, 11),
        127: (2024, 7, 23),
        128: (2024, 8, 20),
        129: (2024, 9, 17),
        130: (2024, 10, 15),
        131: (2024, 11, 12),
        132: (2025, 1, 14),
        133: (2025, 2, 4),
        134: (2025, 3, 4),
        135: (2025, 4, 1),
        136: (2025, 4, 29),
        137: (2025, 5, 27),
        138: (2025, 6, 24),
    }.items()
}
_FIRST, _LAST = min(_KNOWN), max(_KNOWN)
_CADENCE = timedelta(weeks=4)


def release_date(version: int) -> datetime:
    """Stable release date of Chrome ``version`` (estimated outside the known table)."""
    if version in _KNOWN:
        return _KNOWN[version]
    if version > _LAST:
        return _KNOWN[_LAST] + (version - _LAST) * _CADENCE
    return _KNOWN[_FIRST] - (_FIRST - version) * _CADENCE


def stable_version(at: datetime) -> int:
    """The Chrome stable version at ``at`` (the newest version released on or before it)."""
    if at >= _KNOWN[_LAST]:
        return _LAST + int((at - _KNOWN[_LAST]) / _CADENCE)
    if at < _KNOWN[_FIRST]:
        return _FIRST - 1 - int((_KNOWN[_FIRST] - at - timedelta(microseconds=1)) / _CADENCE)
    return max(v for v, d in _KNOWN.items() if d <= at)


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p != "")
