"""certfailover: keep a site trusted when its certificate authority fails."""

__version__ = "0.1.0"
__all__ = ["__version__"]
