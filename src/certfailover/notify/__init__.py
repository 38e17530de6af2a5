"""Notifications: webhook, email (SMTP + STARTTLS), command hook, and a Dispatcher."""

from .background import Background
from .base import (
    CRITICAL,
    EVENT_KINDS,
    INFO,
    SEVERITIES,
    WARNING,
    Limits,
    Notifier,
    NotifyError,
    event_payload,
    event_severity,
)
from .command import CommandNotifier
from .dispatch import Delivery, Dispatcher
from .email import EmailNotifier
from .routes import Routes
from .webhook import SIGNATURE_HEADER, WebhookNotifier, sign

__all__ = [
    "CRITICAL",
    "EVENT_KINDS",
    "INFO",
    "SEVERITIES",
    "SIGNATURE_HEADER",
    "WARNING",
    "Background",
    "CommandNotifier",
    "Delivery",
    "Dispatcher",
    "EmailNotifier",
    "Limits",
    "Notifier",
    "NotifyError",
    "Routes",
    "WebhookNotifier",
    "event_payload",
    "event_severity",
    "sign",
]
