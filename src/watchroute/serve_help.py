"""`watchroute serve --help`, made from the settings themselves: every flag with its
WATCHROUTE_* variable and its default, then the settings that have no flag, so that each
setting can be found from the command line and none of it can drift from `Settings`.

The flags default to None (a flag not given leaves the setting to the environment), which is
why the defaults are written from `Settings` rather than from the flags.
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperCommand, TyperOption

_VARIABLE = re.compile(r"\s*\[WATCHROUTE_\w+\]\s*$")


def variable(name: str) -> str:
    return f"WATCHROUTE_{name.upper()}"


def shown_default(value: Any) -> str | None:
    """A default as a person would type it; None when there is nothing to show."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flagless_settings(flags: set[str]) -> list[tuple[str, str | None]]:
    """The settings that have no flag of `serve`, by variable, with their defaults."""
    from watchroute.settings import Settings

    return [
        (variable(name), shown_default(field.default))
        for name, field in Settings.model_fields.items()
        if name not in flags
    ]


class ServeCommand(TyperCommand):
    """The `serve` command, whose help is completed from `Settings` when it is shown (at no cost
    to starting the server or to the other commands)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        if not getattr(self, "_described", False):
            self._describe()
            self._described = True
        super().format_help(ctx, formatter)

    def _describe(self) -> None:
        from rich.markup import escape

        from watchroute.settings import Settings

        fields = Settings.model_fields
        flags = set()
        for param in self.params:
            if not isinstance(param, TyperOption) or param.name not in fields:
                continue
            flags.add(param.name)
            help = _VARIABLE.sub("", param.help or "")
            notes = f"[env var: {variable(param.name)}]"
            default = shown_default(fields[param.name].default)
            if default is not None:
                notes += f" [default: {default}]"
            param.help = f"{help} {escape(notes)}".strip()
        lines = [f"{name}={default or ''}" for name, default in flagless_settings(flags)]
        self.epilog = (
            "Settings without a flag, as environment variables with their defaults "
            "(docs/ says what each does):\n\n" + escape("\n".join(lines))
        )
