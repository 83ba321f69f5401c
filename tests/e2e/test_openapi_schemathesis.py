"""schemathesis against the real server's /openapi.json (authenticated, so every route is
reached), with a bounded number of examples: no 5xx, and no response that breaks the schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from tests.support.openapi import operations_of
from tests.support.security_keys import AUDIENCE, SECRET, hs_token
from tests.support.server import ServerProcess

pytestmark = pytest.mark.timeout(120)
EXAMPLES = 60


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("schemathesis"),
        auth="jwt",
        jwt_secret=SECRET,
        jwt_audience=AUDIENCE,
        rules='{"notes": "owner=$sub"}',
    ).start()
    yield proc
    proc.stop()


TOKEN = hs_token(sub="schemathesis", scope="read:* write:* watch:*", ttl=3600)
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def check(case: Any) -> None:
    query = case.query or {}
    if query.get("watch") in ("true", "1", "longpoll"):
        # A streaming watch runs until its timeout: keep each one short.
        query["timeout"] = 0.2
        query.pop("heartbeat", None)
        case.query = query
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10, checks=CHECKS)


@pytest.mark.slow
def test_api_conforms_to_its_openapi_document(api: ServerProcess) -> None:
    # Each operation's cases from its strategy, driven by hypothesis directly (schemathesis's
    # pytest plugin does not load under the pytest this suite runs).
    openapi = schemathesis.openapi.from_url(api.url + "/openapi.json")
    operations = operations_of(openapi)
    assert len(operations) >= 8
    for operation in operations:
        run = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))(
            given(case=operation.as_strategy())(check)
        )
        run()


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("text/event-stream", "text/event-stream"),
        ("application/x-ndjson", "application/x-ndjson"),
        ("*/*", "application/x-ndjson"),
    ],
)
@pytest.mark.parametrize(
    ("path", "template"), [("/v1/notes", "/v1/{collection}"), ("/v1/notes/n1", "/v1/{collection}/{id}")]
)
def test_a_watch_answers_with_a_media_type_its_operation_documents(
    api: ServerProcess, path: str, template: str, accept: str, media_type: str
) -> None:
    document = httpx.get(api.url + "/openapi.json").json()
    documented = document["paths"][template]["get"]["responses"]["200"]["content"]
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": accept}
    answer = httpx.get(api.url + path, params={"watch": "true", "timeout": "0.2"}, headers=headers)
    assert answer.status_code == 200
    received = answer.headers["content-type"].split(";")[0]
    assert received == media_type
    assert received in documented


def test_only_the_reads_that_can_watch_document_a_stream(api: ServerProcess) -> None:
    document = httpx.get(api.url + "/openapi.json").json()
    streaming = {
        (method, path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for response in operation.get("responses", {}).values()
        if "text/event-stream" in response.get("content", {})
    }
    assert streaming == {
        ("get", "/v1/{collection}"),
        ("get", "/v1/{collection}/{id}"),
        ("get", "/v1/_schemas"),  # the schemas are a collection: they can be watched too
        ("get", "/v1/_schemas/{collection}"),
        ("get", "/v1/_bridges"),  # the bridges' configurations, watched like a collection
    }
