"""The flags of `watchroute serve`, made from the settings groups: one flag per setting, named
after it, with its description, its WATCHROUTE_* variable and its default in the help, and the
flags of each group under a panel of their own in `serve --help`.

The flags default to None: a flag not given leaves the setting to the environment (pydantic
reads it), which is why the defaults shown are the settings' own, not the flags'.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic.fields import FieldInfo
from rich.markup import escape

from watchroute.settings import GROUPS, variable

PANELS = {
    "server": "Server",
    "store": "Store (docs/scale-out.md for PostgreSQL and capture)",
    "watch": "Watch (docs/watch.md)",
    "websocket": "WebSocket",
    "security": "Security (docs/security.md)",
}


def shown_default(value: Any) -> str | None:
    """A default as a person would type it; None when there is nothing to show."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flag_type(field: FieldInfo) -> type:
    """What the flag parses: the setting's type without None; a choice is a string that the
    settings check (their message names the choices)."""
    kind: Any = field.annotation
    if get_origin(kind) in (Union, types.UnionType):
        kind = next(arg for arg in get_args(kind) if arg is not type(None))
    if get_origin(kind) is Literal:
        kind = type(get_args(kind)[0])
    return kind


def help_text(name: str, field: FieldInfo) -> str:
    notes = f"[env var: {variable(name)}]"
    default = shown_default(field.default)
    if default is not None:
        notes += f" [default: {default}]"
    return f"{escape(field.description or '')} {escape(notes)}".strip()


def setting_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per setting, as typer reads a command's flags, group by group."""
    parameters = []
    for group, model in GROUPS.items():
        for name, field in model.model_fields.items():
            option = typer.Option(
                help=help_text(name, field), rich_help_panel=PANELS[group], show_default=False
            )
            annotation = Annotated[flag_type(field) | None, option]  # type: ignore[valid-type]
            parameters.append(
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
            )
    return parameters


def with_setting_flags(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command(**given)` a flag per setting: typer reads the signature set here, and
    calls the command with each flag by the setting's name (None when not given)."""
    parameters = setting_parameters()
    command.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    return command
