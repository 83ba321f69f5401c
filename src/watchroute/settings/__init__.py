"""Configuration: every setting is a `watchroute serve` flag and a WATCHROUTE_* variable.

`Settings` is composed of five groups, one module each (server, store, watch, websocket,
security). Settings are read flat (`settings.port`, `settings.jwt_secret`): a setting's name is
its flag (`--jwt-secret`) and its variable (`WATCHROUTE_JWT_SECRET`), and the `serve` command's
flags are made from `GROUPS` (`serve_flags.py`), so that flags, variables and help cannot drift.
"""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from watchroute.settings.security import SecuritySettings
from watchroute.settings.server import ServerSettings
from watchroute.settings.store import StoreSettings
from watchroute.settings.watch import WatchSettings
from watchroute.settings.websocket import WebSocketSettings

ENV_PREFIX = "WATCHROUTE_"

# Each group with its settings, in the order `serve --help` shows them.
GROUPS: dict[str, type[BaseModel]] = {
    "server": ServerSettings,
    "store": StoreSettings,
    "watch": WatchSettings,
    "websocket": WebSocketSettings,
    "security": SecuritySettings,
}


class Settings(
    ServerSettings, StoreSettings, WatchSettings, WebSocketSettings, SecuritySettings, BaseSettings
):
    # Errors never echo their input: it may hold --jwt-secret.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", hide_input_in_errors=True)

    @property
    def document_limit(self) -> int:
        """`max_document_bytes`, or `max_body_bytes` when it is not set."""
        return self.max_body_bytes if self.max_document_bytes is None else self.max_document_bytes

    @property
    def batch_limit(self) -> int:
        """`max_batch_bytes`, or 8 * `max_body_bytes` when it is not set."""
        return 8 * self.max_body_bytes if self.max_batch_bytes is None else self.max_batch_bytes


def variable(name: str) -> str:
    """The environment variable of a setting."""
    return f"{ENV_PREFIX}{name.upper()}"


def flag(name: str) -> str:
    """The `serve` flag of a setting."""
    return "--" + name.replace("_", "-")


def group_of(name: str) -> str:
    """The group a setting belongs to."""
    for group, model in GROUPS.items():
        if name in model.model_fields:
            return group
    raise KeyError(name)


__all__ = [
    "GROUPS",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "WatchSettings",
    "WebSocketSettings",
    "flag",
    "group_of",
    "variable",
]
