"""The static-ct-api (C2SP static-ct-api, tlog-tiles, tlog-checkpoint) read side: the signed
checkpoint and the data and hash tiles of a tiled CT log.

- `<monitoring>/checkpoint`: a signed note; its body is `origin`, the tree size and the
  base64 root hash; the log's signature line is an RFC6962NoteSignature: key ID
  SHA-256(origin || "\\n" || 0x05 || log ID)[:4], then the timestamp (uint64, ms) and the
  RFC 6962 `digitally-signed` TreeHeadSignature over (timestamp, size, root).
- `<monitoring>/tile/data/<N>[.p/<W>]`: 256 TileLeaf per full tile: a TimestampedEntry, then
  the chain as SHA-256 fingerprints (a precert also carries its pre_certificate). The Merkle
  leaf is 0x00 0x00 || TimestampedEntry.
- `<monitoring>/tile/<L>/<N>[.p/<W>]`: 256 hashes per full tile; entry i of level L, tile N is
  the root of leaves [(256N + i) * 256^L, +256^L).

Encoded by hand with `struct`-level slicing, like ct/tls.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import http, tls
from .client import STH, LogError
from .loglist import LogInfo

__all__ = ["WIDTH", "TiledClient", "leaf_inputs", "note_key_id", "tile_path"]

WIDTH = 256
NOTE_RFC6962 = 0x05


def tile_path(n: int) -> str:
    """tlog-tiles index encoding: 1234067 -> "x001/x234/067"."""
    groups = []
    while True:
        groups.append(f"{n % 1000:03d}")
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    return "/".join([f"x{g}" for g in groups[:-1]] + [groups[-1]])


def note_key_id(origin: str, log_id: bytes) -> bytes:
    return hashlib.sha256(origin.encode() + b"\n" + bytes([NOTE_RFC6962]) + log_id).digest()[:4]


def _entry_length(data: bytes, pos: int) -> int:
    """Length of the TimestampedEntry at `pos`."""
    r = tls._Reader(data)
    r.pos = pos
    r.take(8)
    entry_type = r.uint(2)
    if entry_type == tls.X509_ENTRY:
        r.vector(3)
    elif entry_type == tls.PRECERT_ENTRY:
        r.take(32)
        r.vector(3)
    else:
        raise tls.TLSDecodeError(f"unknown LogEntryType {entry_type} in a data tile")
    r.vector(2)
    return r.pos - pos


def leaf_inputs(tile: bytes) -> list[bytes]:
    """The Merkle leaves (MerkleTreeLeaf bytes) of a data tile, in order."""
    out, pos = [], 0
    while pos < len(tile):
        n = _entry_length(tile, pos)
        entry = tile[pos:pos + n]
        r = tls._Reader(tile)
        r.pos = pos + n
        if int.from_bytes(entry[8:10], "big") == tls.PRECERT_ENTRY:
            r.vector(3)  # pre_certificate
        r.vector(2)  # the chain's fingerprints
        pos = r.pos
        out.append(b"\x00\x00" + entry)
    return out


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    sth: STH


class TiledClient:
    def __init__(self, log: LogInfo, *, timeout: float = 30.0,
                 now: Callable[[], float] = time.time, max_bytes: int = http.MAX_BYTES) -> None:
        self.log, self.timeout = log, timeout
        self._http = http.fetcher(timeout, max_bytes)
        from .client import LogClient  # the tree head checks: signature and age
        self._verifier = LogClient(log, timeout=timeout, now=now, max_bytes=max_bytes)

    def _get(self, path: str) -> bytes:
        return http.get(self._http, self.log.url + path, LogError)

    def checkpoint(self) -> Checkpoint:
        """The latest checkpoint, its RFC6962NoteSignature verified with the log's key."""
        url = self.log.url + "checkpoint"
        text = self._get("checkpoint").decode("utf-8", "replace")
        body, sep, sigs = text.partition("\n\n")
        lines = body.split("\n")
        if not sep or len(lines) < 3:
            raise LogError(f"{url}: not a signed checkpoint")
        origin = lines[0]
        if not (lines[1].isascii() and lines[1].isdigit() and len(lines[1]) <= 20):
            raise LogError(f"{url}: tree size {lines[1][:40]!r} is not a decimal number")
        size = int(lines[1])
        try:
            root = base64.b64decode(lines[2], validate=True)
        except (ValueError, binascii.Error):
            raise LogError(f"{url}: root hash {lines[2][:60]!r} is not base64") from None
        if len(root) != 32:
            raise LogError(f"{url}: root hash is {len(root)} bytes, not 32")
        want = note_key_id(origin, self.log.log_id)
        for line in sigs.split("\n"):
            if not line.startswith("\u2014 "):
                continue
            try:
                name, blob = line[2:].split(" ", 1)
                raw = base64.b64decode(blob, validate=True)
            except (ValueError, binascii.Error):
                continue
            if name != origin or raw[:4] != want or len(raw) < 12:
                continue
            sth = STH(size, int.from_bytes(raw[4:12], "big"), root, raw[12:])
            self._verifier.verify_sth(sth, where=url)
            return Checkpoint(origin, sth)
        raise LogError(f"{url}: no signature by this log's key (origin {origin!r})")

    def data_tile(self, n: int, width: int) -> list[bytes]:
        path = f"tile/data/{tile_path(n)}" + ("" if width == WIDTH else f".p/{width}")
        try:
            leaves = leaf_inputs(self._get(path))
        except tls.TLSDecodeError as exc:
            raise LogError(f"{self.log.url}{path}: not a data tile: {exc}") from None
        if len(leaves) != width:
            raise LogError(f"{self.log.url}{path}: {len(leaves)} entries, want {width}")
        return leaves

    def hash_tile(self, level: int, n: int, width: int) -> list[bytes]:
        path = f"tile/{level}/{tile_path(n)}" + ("" if width == WIDTH else f".p/{width}")
        data = self._get(path)
        if len(data) != 32 * width:
            raise LogError(f"{self.log.url}{path}: {len(data)} bytes, want {32 * width}")
        return [data[i:i + 32] for i in range(0, len(data), 32)]
