"""`watchroute apikey create | list | revoke`: API keys, managed beside the data they open.

The key is printed once, at creation, and never again: only its SHA-256 is stored.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated

import orjson
import typer

from watchroute.security.apikeys import APIKeyStore, api_key_store
from watchroute.security.grants import is_grant

app = typer.Typer(help="Create, list and revoke API keys (for --auth apikey).", no_args_is_help=True)

Database = Annotated[
    str | None,
    typer.Option(
        help="sqlite:///PATH or postgresql://... of the server's database [WATCHROUTE_DATABASE]",
        show_default=False,
    ),
]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _store(database: str | None) -> APIKeyStore:
    from watchroute.settings import Settings

    try:
        settings = Settings()
        return api_key_store(database or settings.database, settings.postgres_schema)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--database") from None


def _seconds(text: str) -> float:
    try:
        return float(text[:-1]) * _UNITS[text[-1]] if text[-1:] in _UNITS else float(text)
    except ValueError:
        raise typer.BadParameter("a duration like 3600, 90m, 12h or 30d", param_hint="--expires-in") from None


@app.command()
def create(
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope", "-s", help="A grant: read:C, write:C or watch:C (* in C), or metrics; repeat"
        ),
    ],
    subject: Annotated[str | None, typer.Option(help="Who the key acts as ($sub in rules)")] = None,
    name: Annotated[str, typer.Option(help="A note for `list`")] = "",
    expires_in: Annotated[str | None, typer.Option(help="e.g. 30d, 12h; default: never")] = None,
    database: Database = None,
) -> None:
    """Create a key and print it (once)."""
    bad = [s for s in scope if not is_grant(s)]
    if bad:
        raise typer.BadParameter(
            f"{bad[0]!r} is not read:C, write:C, watch:C or metrics", param_hint="--scope"
        )
    expires = time.time() + _seconds(expires_in) if expires_in else None
    record, key = _store(database).create(scope, subject, name, expires)
    if sys.stdout.isatty():
        typer.echo(f"API key {record.id} for {record.subject} ({' '.join(record.scopes)}):")
        typer.echo(key)
        typer.echo("Keep it now: it is not stored and cannot be shown again.", err=True)
    else:
        sys.stdout.write(
            orjson.dumps({"id": record.id, "subject": record.subject, "key": key}).decode() + "\n"
        )


@app.command("list")
def list_(database: Database = None) -> None:
    """List keys (never the keys themselves)."""
    for k in _store(database).list():
        state = (
            "revoked" if k.revoked else ("expired" if k.expires and k.expires <= time.time() else "active")
        )
        line = {"id": k.id, "subject": k.subject, "scopes": list(k.scopes), "name": k.name, "state": state}
        sys.stdout.write(orjson.dumps(line).decode() + "\n")


@app.command()
def revoke(
    id: Annotated[str, typer.Argument(help="The key's id, as `list` shows it")], database: Database = None
) -> None:
    """Revoke a key: refused by every server within --apikey-cache-seconds."""
    if not _store(database).revoke(id):
        typer.echo(f"no active key {id}", err=True)
        raise typer.Exit(3)
    typer.echo(f"revoked {id}")
