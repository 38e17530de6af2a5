"""Free loopback ports for lab processes (never fixed ports: other labs run concurrently)."""

from __future__ import annotations

import socket

__all__ = ["free_port", "free_udp_tcp_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_udp_tcp_port(attempts: int = 50) -> int:
    """A port on 127.0.0.1 free for both TCP and UDP (for a DNS server that listens on both)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise OSError(f"no port free for both TCP and UDP on 127.0.0.1 after {attempts} attempts")
