"""Connections to PostgreSQL: what every session of an instance is set up with."""

from __future__ import annotations

import psycopg
from psycopg import sql

SCHEMES = ("postgresql://", "postgres://")
# Errors that say the database is out of reach (or refused for now), not that a request is wrong.
UNAVAILABLE = (psycopg.OperationalError, psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)


def is_postgres(url: str) -> bool:
    return url.startswith(SCHEMES)


def channel(schema: str) -> str:
    """The NOTIFY channel an instance rings after each commit: one per schema."""
    return f"{schema}_commits"


def session_setup(schema: str, lock_timeout: float, idle_in_transaction_timeout: float) -> sql.Composed:
    """The SET statements every connection starts with.

    lock_timeout: a writer that waits longer than this for the counter row (another instance's
    transaction frozen with it) gives up with 503 rather than hold its own clients for ever;
    idle_in_transaction_session_timeout: a session frozen inside a transaction (a process
    stopped by a debugger, a VM paused) loses it, and with it the counter row's lock.
    plan_cache_mode: psycopg prepares a statement after a few runs, and PostgreSQL may then keep
    one generic plan for it, chosen for the tables as they were: a store that starts empty would
    look up each group's current rows by a sequential scan of every resource until autovacuum
    next analyses the table. A plan made for each run costs tens of microseconds and follows the
    tables as they grow.
    """
    return sql.SQL(
        "SET search_path TO {}; SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}; "
        "SET plan_cache_mode = force_custom_plan"
    ).format(
        sql.Identifier(schema),
        sql.Literal(f"{int(lock_timeout * 1000)}ms"),
        sql.Literal(f"{int(idle_in_transaction_timeout * 1000)}ms"),
    )
