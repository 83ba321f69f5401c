"""Problem details as a Starlette response, for routes and the framework's exception handlers."""

from __future__ import annotations

from starlette.responses import Response

from watchroute.core.problems import PROBLEM_MEDIA_TYPE, Problem
from watchroute.wire.problems import problem_body


def problem_response(problem: Problem) -> Response:
    return Response(
        problem_body(problem),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )
