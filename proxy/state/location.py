"""Where the state store is when the configuration does not say: beside the audit log, on this machine."""

from __future__ import annotations

from pathlib import Path

from proxy.settings import Settings


def state_url(settings: Settings) -> str:
    """The embedded store ``serve`` uses when none is configured: a SQLite file beside a SQLite audit log,
    so every worker on the machine shares it (and a restart resumes from it), else ``var/state.db``.

    >>> state_url(Settings(audit={"url": "sqlite:////srv/guard/audit.db"}))
    'sqlite:////srv/guard/state.db'
    """
    if settings.state.url:
        return settings.state.url
    audit = settings.audit.url
    if settings.audit.enabled and audit.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(audit[len("sqlite:///") :]).with_name("state.db"))
    return "sqlite:///var/state.db"


def with_state_default(settings: Settings) -> Settings:
    """``settings`` with :func:`state_url` filled in."""
    return settings.model_copy(update={"state": settings.state.model_copy(update={"url": state_url(settings)})})
