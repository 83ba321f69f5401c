"""A list's pages: its parameters, and the continue token that carries a listing from one page
to the next (the first page's revision, the last id read, the filter it was made for)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Annotated

import orjson
from pydantic import Field, TypeAdapter

from watchroute.core.problems import bad_request
from watchroute.core.revisions import MAX_REVISION, parse_revision
from watchroute.watch.params import Number


@dataclass(slots=True)
class ListParams:
    """A list's own parameters (the watch route's are `WatchParams`)."""

    limit: Annotated[int, Field(ge=1, le=10000, description="Resources per page.")] = 500
    continue_: Annotated[
        str | None, Field(alias="continue", description="The token of the page before, to get the next.")
    ] = None
    revision: Annotated[
        int | None,
        Field(ge=0, le=MAX_REVISION, description="Serve a state at least as new as this revision."),
        Number,
    ] = None


LIST_PARAMS: TypeAdapter[ListParams] = TypeAdapter(ListParams)


def encode_continue(after_id: str, revision: int, filter_text: str | None) -> str:
    token = orjson.dumps({"a": after_id, "r": revision, "f": filter_text})
    return base64.urlsafe_b64encode(token).decode().rstrip("=")


def decode_continue(token: str, filter_text: str | None) -> tuple[str, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        state = orjson.loads(raw)
        after_id = state["a"]
        if not isinstance(after_id, str):
            raise ValueError
        revision = parse_revision(state["r"], "a continue token's revision", reason="BadContinue", text=False)
    except (ValueError, KeyError, TypeError):
        raise bad_request("BadContinue", "the continue token is not one this server made") from None
    if state.get("f") != filter_text:
        raise bad_request("BadContinue", "a continue token must be used with the same filter")
    return after_id, revision
