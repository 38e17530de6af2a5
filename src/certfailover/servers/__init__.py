"""Web server adapters behind one narrow protocol (see base.ServerAdapter)."""

from .base import Endpoint, LiveChange, ServerAdapter
from .registry import TYPES, make_adapter

__all__ = ["Endpoint", "LiveChange", "ServerAdapter", "TYPES", "make_adapter"]
