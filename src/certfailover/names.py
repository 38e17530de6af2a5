"""DNS names in certificates: the SAN list, and wildcard matching (RFC 6125: "*" stands for
exactly one whole left-most label). One home for the engine, the names check and the trust
engine's name check. Also the one reader of a name server's address ("ip", "ip:port",
"[v6]:port"), for the CAA resolver and the DNS-01 servers.
"""

from __future__ import annotations

import ipaddress

from cryptography import x509

__all__ = ["cert_names", "name_matches", "nameserver"]


def nameserver(text: str, default_port: int = 53) -> tuple[str, int]:
    """(ip, port) of "192.0.2.53", "192.0.2.53:5353", "2001:db8::53", "[2001:db8::53]:5353";
    ValueError naming the text for anything else (a host name, a bad port)."""
    host, port = text, str(default_port)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: write an IPv6 address with a port as '[addr]:port'")
        port = rest[1:] or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: not an IP address (ip, ip:port or [v6]:port)") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: {port!r} is not a port (1 to 65535)")
    return host, int(port)


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
