"""The `watchroute` command: `serve`, and a client of a running server (`get`, `list`, `put`,
`patch`, `delete`, `watch`) for people at a terminal and for scripts.

Output is made for whoever reads it: rich text on a terminal, JSON (NDJSON for `watch`) when
piped or with `--output json`. Exit codes say what went wrong, so scripts can branch on them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import urlsplit

import orjson
import typer
from rich.markup import escape

from watchroute import __version__
from watchroute.security.commands import app as apikey_app
from watchroute.serve_help import with_setting_flags
from watchroute.watch.heartbeat import HEARTBEAT_DEFAULT, HEARTBEAT_MAX, HEARTBEAT_MIN

if TYPE_CHECKING:
    from watchroute.client import Client, Resource, WatchEvent

# Exit codes (2 is a usage error, as click makes it).
EXIT_REFUSED = 1  # the server refused the request (another 4xx, or a 5xx)
EXIT_PORT_TAKEN = 2  # serve: as for a bad option, the --port given cannot be served
EXIT_NOT_FOUND = 3
EXIT_PRECONDITION = 4  # 409 Conflict or 412 Precondition Failed
EXIT_UNREACHABLE = 5
EXIT_EXPIRED = 6  # watch: the resume point is older than the history horizon
EXIT_INTERRUPTED = 130

app = typer.Typer(help="watchroute: REST resources with a watch route.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")


def _print_version(asked: bool) -> None:
    if asked:
        sys.stdout.write(f"watchroute {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """watchroute: REST resources with a watch route."""


# Each flag of `serve` is a setting, made from the settings groups (serve_help.py).
@app.command()
@with_setting_flags
def serve(**flags: Any) -> None:
    """Run the server."""
    given = {name: value for name, value in flags.items() if value is not None}
    from pydantic import ValidationError

    from watchroute.server.serve import PortTaken, SettingError, check
    from watchroute.server.serve import serve as run  # uvicorn is only needed to serve
    from watchroute.settings import Settings

    try:
        settings = Settings(**given)
        check(settings)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        message = errors[0]["msg"].removeprefix("Value error, ")
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        loc = errors[0]["loc"]
        raise _bad_setting(str(loc[0]) if loc else None, message, given) from None
    except SettingError as exc:
        raise _bad_setting(exc.setting, str(exc), given) from None
    if settings.capture:  # a table that cannot be captured: say what to run, before serving
        from watchroute.capture.capturer import preflight
        from watchroute.capture.tables import CaptureRefused

        try:
            preflight(settings)
        except CaptureRefused as exc:
            _fail(str(exc), EXIT_REFUSED)
    try:
        run(settings)
    except PortTaken as taken:
        _fail(str(taken), EXIT_PORT_TAKEN)


def _bad_setting(name: str | None, message: str, given: dict[str, Any]) -> typer.BadParameter:
    """One line saying what is wrong, naming the flag or the variable the setting came from."""
    if name is None:
        return typer.BadParameter(message)
    hint = f"'--{name.replace('_', '-')}'" if name in given else f"WATCHROUTE_{name.upper()}"
    return typer.BadParameter(message, param_hint=hint)


# -- change capture --------------------------------------------------------------------------

capture_app = typer.Typer(
    help="Change capture of PostgreSQL tables (docs/scale-out.md).", no_args_is_help=True
)
app.add_typer(capture_app, name="capture")


@capture_app.command("drop")
def capture_drop(
    database: Annotated[
        str | None, typer.Option(help="postgresql://USER@HOST/DB [WATCHROUTE_DATABASE]")
    ] = None,
    capture_slot: Annotated[str | None, typer.Option(help="[WATCHROUTE_CAPTURE_SLOT]")] = None,
    postgres_schema: Annotated[str | None, typer.Option(help="[WATCHROUTE_POSTGRES_SCHEMA]")] = None,
) -> None:
    """Remove the replication slot and publication (stop the capturing servers first); the next
    capture copies the tables again."""
    from watchroute.capture.slot import drop
    from watchroute.settings import Settings

    given: dict[str, Any] = {
        "database": database,
        "capture_slot": capture_slot,
        "postgres_schema": postgres_schema,
    }
    settings = Settings(**{name: value for name, value in given.items() if value is not None})
    try:
        done = drop(settings.database, settings.capture_slot, settings.postgres_schema)
    except Exception as exc:
        _fail(str(exc).strip(), EXIT_REFUSED)
    typer.echo("removed " + ", ".join(done) if done else "nothing to remove")


class Output(StrEnum):
    auto = "auto"
    text = "text"
    json = "json"


class Transport(StrEnum):
    sse = "sse"
    ws = "ws"
    ndjson = "ndjson"
    longpoll = "longpoll"


def _server_url(url: str) -> str:
    """The server's root URL, refused early when it cannot be one: a request to it would fail
    with a message about something else (no scheme) or reach the wrong route (a /v1 path)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise typer.BadParameter(f"{url} is not a server URL: expected http://HOST:PORT, e.g. http://{url}")
    path = parts.path.rstrip("/")
    if path == "/v1" or path.endswith("/v1") or "/v1/" in path:
        root = url[: url.index("/v1")] or f"{parts.scheme}://{parts.netloc}"
        raise typer.BadParameter(f"{url} names a route: give the server's root URL, {root}")
    return url


Url = Annotated[
    str,
    typer.Option("--url", envvar="WATCHROUTE_URL", callback=_server_url, help="The server"),
]
OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="text on a terminal, json when piped (auto), or either")
]
Collection = Annotated[str, typer.Argument(help="The collection, e.g. stocks")]
Id = Annotated[str, typer.Argument(help="The resource id, e.g. AAPL")]
IfMatch = Annotated[
    int | None, typer.Option("--if-match", help="Only if the resource is at this revision (else exit 4)")
]
Ttl = Annotated[
    float | None,
    typer.Option("--ttl", help="Seconds until it expires and is deleted, unless written again (a lease)"),
]
DEFAULT_URL = "http://127.0.0.1:8000"


def _as_json(output: Output) -> bool:
    return output is Output.json or (output is Output.auto and not sys.stdout.isatty())


def _fail(message: str, code: int) -> NoReturn:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def _client(url: str) -> Iterator[Client]:
    """A client whose errors become a message on stderr and an exit code."""
    from watchroute.client import APIError, Client, ConnectionFailed, Expired, NotFound

    client = Client(url)
    try:
        yield client
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except ConnectionFailed as exc:
        _fail(f"cannot reach the server at {url} ({exc.__cause__ or exc})", EXIT_UNREACHABLE)
    except NotFound as exc:
        _fail(exc.detail, EXIT_NOT_FOUND)
    except Expired as exc:
        _fail(f"{exc.detail} (use --relist to list again by itself)", EXIT_EXPIRED)
    except APIError as exc:
        code = EXIT_PRECONDITION if exc.status in (409, 412) else EXIT_REFUSED
        _fail(f"{exc.status} {exc.reason}: {exc.detail}", code)
    finally:
        client.close()


def _read_json(text: str | None, what: str) -> Any:
    """DATA as given: JSON text, @FILE, or - / nothing for standard input."""
    if text is None or text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            with open(text[1:], "rb") as f:
                text = f.read().decode()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {text[1:]}: {exc.strerror}", param_hint=what) from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint=what) from None


def _print_resource(resource: Resource, collection: str, output: Output, verb: str = "") -> None:
    if _as_json(output):
        sys.stdout.write(orjson.dumps(resource.to_json()).decode() + "\n")
        return
    from rich.console import Console

    console = Console(highlight=False)
    console.print(
        f"[bold]{escape(f'{collection}/{resource.id}')}[/] {verb}[dim]revision {resource.revision}[/]"
    )
    console.print_json(orjson.dumps(resource.data).decode())


@app.command()
def get(collection: Collection, id: Id, url: Url = DEFAULT_URL, output: OutputOpt = Output.auto) -> None:
    """Read a resource."""
    with _client(url) as client:
        _print_resource(client.get(collection, id), collection, output)


@app.command("list")
def list_(
    collection: Collection,
    filter: Annotated[str | None, typer.Option("--filter", "-f", help='e.g. "price>100,sector=tech"')] = None,
    limit: Annotated[int | None, typer.Option(help="One page of at most this many (default: all)")] = None,
    url: Url = DEFAULT_URL,
    output: OutputOpt = Output.auto,
) -> None:
    """List a collection."""
    with _client(url) as client:
        page = client.list(collection, filter=filter, limit=limit)
    if _as_json(output):
        sys.stdout.write(orjson.dumps(page.to_json()).decode() + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "id",
        "revision",
        "data",
        title=f"{escape(collection)} at revision {page.revision}",
        title_justify="left",
    )
    for r in page.items:
        table.add_row(escape(r.id), str(r.revision), escape(orjson.dumps(r.data).decode()))
    Console().print(table)
    if page.continue_:
        Console(stderr=True).print(f"[dim]more: --limit with continue token {escape(page.continue_)}[/]")


@app.command()
def put(
    collection: Collection,
    id: Id,
    data: Annotated[str | None, typer.Argument(help="A JSON object, @FILE, or - for stdin")] = None,
    if_match: IfMatch = None,
    create_only: Annotated[bool, typer.Option(help="Only create; exit 4 when it exists")] = False,
    ttl: Ttl = None,
    url: Url = DEFAULT_URL,
    output: OutputOpt = Output.auto,
) -> None:
    """Create or replace a resource."""
    document = _read_json(data, "DATA")
    if not isinstance(document, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="DATA")
    with _client(url) as client:
        resource = client.put(collection, id, document, if_match=if_match, create_only=create_only, ttl=ttl)
    _print_resource(resource, collection, output, "written at ")


@app.command()
def patch(
    collection: Collection,
    id: Id,
    patch: Annotated[
        str | None,
        typer.Argument(help="A merge patch (object) or JSON patch (array), @FILE, or - for stdin"),
    ] = None,
    if_match: IfMatch = None,
    ttl: Ttl = None,
    url: Url = DEFAULT_URL,
    output: OutputOpt = Output.auto,
) -> None:
    """Patch a resource: a JSON object is a merge patch (RFC 7386), an array a JSON patch (RFC 6902)."""
    document = _read_json(patch, "PATCH")
    if not isinstance(document, dict | list):
        raise typer.BadParameter("must be a JSON object or array", param_hint="PATCH")
    with _client(url) as client:
        resource = client.patch(collection, id, document, if_match=if_match, ttl=ttl)
    _print_resource(resource, collection, output, "patched at ")


@app.command()
def delete(
    collection: Collection,
    id: Id,
    if_match: IfMatch = None,
    url: Url = DEFAULT_URL,
    output: OutputOpt = Output.auto,
) -> None:
    """Delete a resource; prints its last state."""
    with _client(url) as client:
        resource = client.delete(collection, id, if_match=if_match)
    _print_resource(resource, collection, output, "deleted at ")


@app.command()
def watch(
    collection: Collection,
    id: Annotated[str | None, typer.Argument(help="Watch only this resource")] = None,
    since: Annotated[int | None, typer.Option(help="Start after this revision (default: now)")] = None,
    filter: Annotated[str | None, typer.Option("--filter", "-f", help='e.g. "price>100"')] = None,
    initial: Annotated[bool, typer.Option(help="First print the current state")] = False,
    transport: Annotated[Transport, typer.Option(help="How events travel")] = Transport.sse,
    count: Annotated[
        int | None, typer.Option(help="Exit after this many changes (the --initial state does not count)")
    ] = None,
    relist: Annotated[bool, typer.Option(help="On 410 Expired, list again instead of exiting 6")] = False,
    heartbeat: Annotated[
        float,
        typer.Option(help="Seconds between server heartbeats", min=HEARTBEAT_MIN, max=HEARTBEAT_MAX),
    ] = HEARTBEAT_DEFAULT,
    patches: Annotated[
        bool, typer.Option("--patches", help="Receive changes as merge patches (printed as whole objects)")
    ] = False,
    conflate: Annotated[
        bool, typer.Option(help="When behind, only the newest state of each resource")
    ] = False,
    bookmarks: Annotated[
        bool, typer.Option("--bookmarks", help="JSON: also print the heartbeat BOOKMARK events")
    ] = False,
    url: Url = DEFAULT_URL,
    output: OutputOpt = Output.auto,
) -> None:
    """Print changes as they commit; reconnects and resumes by itself. Ctrl-C to stop."""
    show = _json_event(bookmarks) if _as_json(output) else _text_event(collection)
    _tell_reconnects()
    with _client(url) as client:
        if since is None and not initial and not patches:
            # Start from a revision now, so that an unreachable server fails fast (exit 5).
            # (With patches the watch lists the state they apply to, which fails as fast.)
            since = client.list(collection, limit=1).revision
        changes = 0
        events = client.watch(
            collection,
            id,
            since=since,
            filter=filter,
            initial=initial,
            transport=transport.value,
            on_expired="relist" if relist else "raise",
            heartbeat=heartbeat,
            format="patch" if patches else "full",
            conflate=conflate,
        )
        with events:
            for event in events:
                show(event)
                if event.object is not None and not event.initial:
                    changes += 1
                    if count is not None and changes >= count:
                        return


def _tell_reconnects() -> None:
    """A person at a terminal sees the watch lose its connection and get it back (the client
    says so at INFO); a script reading stderr is not sent lines it did not ask for."""
    if not sys.stderr.isatty():
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("-- %(message)s"))
    client_log = logging.getLogger("watchroute.client")
    client_log.addHandler(handler)
    client_log.setLevel(logging.INFO)


def _json_event(bookmarks: bool) -> Callable[[WatchEvent], None]:
    def show(event: WatchEvent) -> None:
        # A heartbeat only moves the resume point on: noise for `| jq`, unless asked for. The
        # bookmark that ends the initial state stays, as the line between state and changes.
        if event.type == "BOOKMARK" and not event.initial_events_end and not bookmarks:
            return
        sys.stdout.write(orjson.dumps(event.to_json()).decode() + "\n")
        sys.stdout.flush()

    return show


_STYLES = {"ADDED": "green", "MODIFIED": "yellow", "DELETED": "red", "RESYNC": "magenta"}


def _text_event(collection: str) -> Callable[[WatchEvent], None]:
    from rich.console import Console

    console = Console(highlight=False)

    def show(event: WatchEvent) -> None:
        if event.type == "BOOKMARK":
            if event.initial_events_end:
                console.print(
                    f"[dim]-- current state above, live changes below (revision {event.revision})[/]"
                )
            return  # a heartbeat
        if event.object is None:
            console.print(f"[{_STYLES.get(event.type, 'white')}]{event.type}[/] [dim]listing again[/]")
            return
        style = _STYLES.get(event.type, "white")
        rev = f"rev {event.revision}" if not event.initial else f"at {event.object.revision}"
        data = escape(orjson.dumps(event.object.data).decode())
        name = escape(f"{collection}/{event.object.id}")
        console.print(f"[{style}]{event.type:<8}[/] [bold]{name}[/] [dim]{rev}[/] {data}")

    return show


def main() -> None:
    app()
