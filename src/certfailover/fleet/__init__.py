"""Fleets: controllers and agents sharing one PostgreSQL database (docs/fleet.md)."""
