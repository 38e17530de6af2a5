"""Test doubles for code that builds on certfailover, and for certfailover's own tests.

In the spirit of trustme and httpx's MockTransport: real X.509 from `cryptography`, no
network, no pytest. Everything here plugs into the engine's ports (see engine.py)::

    from certfailover.engine import Engine
    from certfailover.testing import FakeClock, FakeIssuer, RecordingDeployer, pki

    clock = FakeClock()
    root = pki.make_root("Root A")
    ca_a = FakeIssuer("a", pki.make_intermediate(root, "Issuing A"), clock=clock)
    deployer = RecordingDeployer(vault)
    engine = Engine(config, db, vault, checks=checks, issuers={"a": ca_a},
                    deploy=deployer, clock=clock)
    engine.tick()

- `pki`: roots, intermediates, leaves, CRLs, OCSP responses, PEM bundles, and `material()`
  (what a Check is given) for check unit tests;
- `FakeClock`: a settable, advanceable `model.Clock`;
- `FakeIssuer`: the issuer port; issues real certificates, can fail, hang or issue unusable
  ones, and records its orders;
- `RecordingDeployer`: the deploy port; records activations, can make a switch fail its
  handshake proof so the engine rolls back.

docs/testing.md walks through a whole engine test.
"""

from __future__ import annotations

from . import pki
from .clock import FakeClock
from .deployer import Activation, RecordingDeployer
from .issuer import FakeIssuer, FakeOrder

__all__ = ["Activation", "FakeClock", "FakeIssuer", "FakeOrder", "RecordingDeployer", "pki"]
