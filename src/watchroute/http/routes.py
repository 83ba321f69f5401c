"""The route table of `/v1`, in the order routes are tried: reserved names before the
collection's templates they would otherwise match."""

from __future__ import annotations

from watchroute.http import batch, bridges, resources, schemas, system, ws
from watchroute.http.table import RouteTable


def route_table() -> RouteTable:
    return RouteTable(
        [*system.ROUTES, *batch.ROUTES, *ws.ROUTES, *bridges.ROUTES, *schemas.ROUTES, *resources.ROUTES]
    )
