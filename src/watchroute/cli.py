"""The `watchroute` command."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from .settings import Settings

app = typer.Typer(help="watchroute: REST resources with a watch route.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """watchroute: REST resources with a watch route."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [WATCHROUTE_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [WATCHROUTE_PORT]")] = None,
    database: Annotated[str | None, typer.Option(help="sqlite:///PATH [WATCHROUTE_DATABASE]")] = None,
    history_events: Annotated[
        int | None, typer.Option(help="Changes kept in the log [WATCHROUTE_HISTORY_EVENTS]")
    ] = None,
    history_seconds: Annotated[
        float | None,
        typer.Option(help="Seconds of changes kept, 0 for no limit [WATCHROUTE_HISTORY_SECONDS]"),
    ] = None,
    max_body_bytes: Annotated[
        int | None, typer.Option(help="Largest request body [WATCHROUTE_MAX_BODY_BYTES]")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="[WATCHROUTE_LOG_LEVEL]")] = None,
) -> None:
    """Run the server."""
    given = {
        k: v for k, v in locals().items() if v is not None and k not in ("run", "Settings", "ValidationError")
    }
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    from .server import serve as run  # uvicorn is only needed to serve

    run(settings)


def main() -> None:
    app()
