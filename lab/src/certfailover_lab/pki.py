"""The lab's test PKI is the product's testing kit (certfailover.testing.pki), re-exported
for the demo, the integration tests and the benchmarks: root -> intermediate -> leaf."""

from __future__ import annotations

from certfailover.testing.pki import (
    Authority,
    make_crl,
    make_intermediate,
    make_leaf,
    make_ocsp,
    make_root,
    pem,
    write_bundle,
)

__all__ = ["Authority", "make_crl", "make_intermediate", "make_leaf", "make_ocsp", "make_root",
           "pem", "write_bundle"]
