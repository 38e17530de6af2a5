"""Web server adapters behind one narrow protocol (see base.ServerAdapter)."""

from .base import Endpoint, LiveChange, ServerAdapter
from .registry import TYPES, make_adapter

__all__ = ["TYPES", "Endpoint", "LiveChange", "ServerAdapter", "make_adapter"]
