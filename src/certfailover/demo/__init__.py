"""`certfailover demo`: two local CAs, a local nginx, a real revocation and a verified failover."""

from .run import DemoResult, run_demo

__all__ = ["DemoResult", "run_demo"]
