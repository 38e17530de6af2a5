"""DNS names in certificates: the SAN list, and wildcard matching (RFC 6125: "*" stands for
exactly one whole left-most label). One home for the engine, the names check and the trust
engine's name check.
"""

from __future__ import annotations

from cryptography import x509

__all__ = ["cert_names", "name_matches"]


def name_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    if pattern.startswith("*.") and "." in host:
        return host.split(".", 1)[1] == pattern[2:] and host.split(".", 1)[0] != ""
    return False


def cert_names(leaf: x509.Certificate) -> list[str]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in san.get_values_for_type(x509.DNSName)]
