"""Running the app on uvicorn, with a shutdown that ends watch streams instead of waiting on them.

On SIGTERM or SIGINT the server stops accepting, tells every watch to end (an EventSource then
reconnects, to this instance's successor, with its Last-Event-ID), gives the streams
`shutdown_grace` seconds to finish, and exits.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import socket
import ssl

import uvicorn

from watchroute.app import create_app
from watchroute.security import redaction
from watchroute.security.policy import Security
from watchroute.security.shared_limits import WorkerLimits
from watchroute.server.connections import ConnectionLimits, raise_fd_limit
from watchroute.server.logs import announce, log_config
from watchroute.server.uvicorn import Server, guarded_http_protocol, internals_usable
from watchroute.server.workers import Supervisor, listening_sockets
from watchroute.settings import Settings
from watchroute.store import open_store
from watchroute.worker_metrics import WorkerMetrics

log = logging.getLogger("watchroute")

BACKLOG = 4096
GC_THRESHOLDS = (2000, 20, 10)


class WatchrouteServer(Server):
    def __init__(
        self,
        config: uvicorn.Config,
        settings: Settings,
        connections: ConnectionLimits | None = None,
        announced: bool = True,
    ) -> None:
        super().__init__(config)
        self.settings = settings
        self.connections = connections
        self.announced = announced  # this process says where the server listens

    def listening(self, address: tuple[str, int] | None) -> None:
        if self.connections is not None:  # the store is open: what it holds is not for sockets
            self.connections.measure()
        if self.announced and address is not None:
            announce(self.settings, *address)
        # Everything alive now (modules, the app, its routes and models) lives as long as the
        # process: out of the collector's sight, a full collection walks only what requests and
        # the window allocate: shorter full collections, a lower p99 for writes and less of the
        # loop's CPU (docs/benchmarks.md, *Measurements behind the code*).
        gc.collect()
        gc.freeze()
        # A young collection every 2,000 objects allocated and not yet freed instead of 700, an
        # older one every 20 of those instead of 10 (a full one every 10 of those, as before).
        # Under writes the defaults spent a noticeable share of the process's CPU in the
        # collector, most of it re-scanning what a request keeps alive while its commit runs;
        # these thresholds about halve it and shorten the longest pause (docs/benchmarks.md,
        # *Measurements behind the code*).
        gc.set_threshold(*GC_THRESHOLDS)

    def stop_asked(self) -> None:
        # The app as handed to uvicorn (not `loaded_app`, which is not there before start-up
        # has loaded it: a signal then came early, and there is no stream to end yet).
        runtime = getattr(getattr(self.config.app, "state", None), "runtime", None)
        if runtime is not None and self.loop is not None:
            # From the signal handler: let the loop do it, between two of its callbacks.
            self.loop.call_soon_threadsafe(runtime.hub.close_all)


class PortTaken(Exception):
    """Something already listens on the address: the server does not start."""


def refuse_taken_port(host: str, port: int) -> None:
    """Raise PortTaken when something listens on host:port.

    The workers' sockets take the port with SO_REUSEPORT, which lets any socket of the same user
    that asked for it too join them: a server started while an older one (or its orphaned
    workers) still listens would share the port with it, and the kernel would hand connections
    to both, under their different settings. A socket that does not ask for it is refused while
    anyone listens there, so one is bound first, and closed.
    """
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return  # the real bind says what is wrong with the host
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As uvicorn binds: connections of a server stopped a moment ago do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with contextlib.suppress(OSError):
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortTaken(
                        f"{host}:{port} is in use: another server (or the workers of one that was "
                        "killed) listens there. Stop it, or choose another --port."
                    ) from None
                # Any other error (an address this machine does not have) is the real bind's to report.


class SettingError(ValueError):
    """A setting that cannot work, found by `check`: which one, and why, in one line."""

    def __init__(self, setting: str, why: str) -> None:
        super().__init__(why)
        self.setting = setting


def check(settings: Settings) -> None:
    """Find what only trying the settings shows (the database URL, key and certificate files)
    before anything starts, as a SettingError instead of a traceback from a worker."""
    try:
        open_store(settings)  # made, not opened: its URL and directory are checked
    except ValueError as exc:
        raise SettingError("database", str(exc)) from None
    try:
        Security(settings)
    except (ValueError, OSError) as exc:
        raise SettingError("jwt_public_key", _why(exc)) from None
    if settings.tls_cert and settings.tls_key:
        try:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
        except OSError as exc:  # ssl.SSLError is one too
            raise SettingError("tls_cert", f"cannot load {settings.tls_cert}: {_why(exc)}") from None


def _why(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


def serve(settings: Settings) -> None:
    refuse_taken_port(settings.host, settings.port)
    internals_usable()  # checked (and a fallback logged) once, before the workers fork
    raise_fd_limit()  # before the workers fork: theirs is the parent's
    if settings.workers == 1:
        _serve_one(settings)
        return
    sockets = listening_sockets(settings.host, settings.port, settings.workers, BACKLOG)
    # Made before the workers fork, so that they share them: their limits hold for the server,
    # and a scrape of any of them shows them all.
    limits = WorkerLimits(settings.workers)
    figures = WorkerMetrics(settings.workers)

    def run_worker(sock: socket.socket, index: int) -> None:
        _serve_one(settings, sock, (limits, figures, index))

    def worker_gone(index: int) -> None:
        limits.clear_worker(index)
        figures.clear(index)

    status = Supervisor(sockets, run_worker, worker_gone=worker_gone).run()
    if status:
        raise SystemExit(status)


def _serve_one(
    settings: Settings,
    sock: socket.socket | None = None,
    shared: tuple[WorkerLimits, WorkerMetrics, int] | None = None,
) -> None:
    app = create_app(settings)
    if shared is not None:
        app.state.runtime.share_with_workers(*shared)
    connections = ConnectionLimits(settings)
    guarded = internals_usable()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # httptools, with the caps on open connections and the request head's deadline; on
        # plain ASGI uvicorn's own cap on the total (it answers 503 beyond it)
        http=guarded_http_protocol(connections) if guarded else "httptools",
        limit_concurrency=None if guarded else connections.total,
        log_level=settings.log_level,
        log_config=log_config(settings),
        access_log=settings.access_log,
        backlog=BACKLOG,
        # uvicorn annotates these two as int but waits them out as seconds (asyncio.timeout,
        # call_later): a fraction of a second is kept, not rounded down to none.
        timeout_graceful_shutdown=settings.shutdown_grace,  # type: ignore[arg-type]
        lifespan="on",
        ws_max_size=settings.ws_max_frame_bytes,
        ws_ping_interval=settings.ws_ping_interval or None,
        ws_ping_timeout=settings.ws_ping_interval or None,
        ws_per_message_deflate=settings.ws_compression,
        timeout_keep_alive=settings.idle_timeout,  # type: ignore[arg-type]  # float: as above
        # X-Forwarded-For names the client only when a proxy we were told of sent it; uvicorn
        # would otherwise believe any local process, which could then pick the address that
        # rate limits count and the audit log names.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ip_list or None,
        ssl_certfile=settings.tls_cert,  # HTTPS and WSS directly, no proxy needed
        ssl_keyfile=settings.tls_key,
    )
    # After the config, which sets up uvicorn's logging: its handshake lines quote the URL as
    # the client sent it, `access_token` included.
    redaction.install()
    if settings.log_level.lower() == "trace" and settings.auth != "none":
        log.warning("log_level=trace logs every request and message whole, credentials included")
    # With several workers, the first says where the server listens, once.
    announced = shared is None or shared[2] == 0
    WatchrouteServer(config, settings, connections if guarded else None, announced).run(
        None if sock is None else [sock]
    )
