"""If-Match / If-None-Match: optimistic concurrency on a resource's revision (its ETag)."""

from __future__ import annotations

from dataclasses import dataclass

from watchroute.core.problems import Problem, bad_request
from watchroute.core.revisions import invalid_revision, parse_revision


@dataclass(slots=True)
class Preconditions:
    if_match: int | None = None
    must_exist: bool = False
    must_not_exist: bool = False


def etag(revision: int) -> str:
    return f'"{revision}"'


def parse_revision_tag(value: str, header: str) -> int:
    tag = value.strip().removeprefix("W/").strip('"')
    try:
        return parse_revision(tag, header)
    except Problem:
        raise invalid_revision(value, header, '"*" or a revision ETag like "42"') from None


def parse(if_match: str | None, if_none_match: str | None) -> Preconditions:
    pre = Preconditions()
    if if_match is not None:
        if if_match.strip() == "*":
            pre.must_exist = True
        else:
            pre.if_match = parse_revision_tag(if_match, "If-Match")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise bad_request("BadParameter", 'on a write, If-None-Match only takes "*"')
        pre.must_not_exist = True
    return pre
