"""The `watchroute` client commands against a real server: output for people and for pipes,
errors on stderr, and exit codes a script can branch on."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from watchroute.cli import app

pytestmark = pytest.mark.timeout(60)

runner = CliRunner()


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), input=input, env=env)


def test_writes_and_reads_print_json_when_not_on_a_terminal(server):
    url = ["--url", server.url]
    put = run("put", "stocks", "AAPL", '{"price": 1}', *url)
    assert put.exit_code == 0, put.output
    written = orjson.loads(put.stdout)
    assert written["data"] == {"price": 1}
    assert orjson.loads(run("get", "stocks", "AAPL", *url).stdout) == written

    patched = run("patch", "stocks", "AAPL", "-", *url, input='{"volume": 5}')  # from stdin
    assert orjson.loads(patched.stdout)["data"] == {"price": 1, "volume": 5}
    jsonpatch = run("patch", "stocks", "AAPL", '[{"op": "remove", "path": "/volume"}]', *url)
    assert orjson.loads(jsonpatch.stdout)["data"] == {"price": 1}

    run("put", "stocks", "MSFT", '{"price": 300}', *url)
    listed = orjson.loads(run("list", "stocks", "--filter", "price>100", *url).stdout)
    assert [r["id"] for r in listed["items"]] == ["MSFT"]
    assert listed["revision"] == httpx.get(server.url + "/v1/stocks").json()["revision"]

    deleted = run("delete", "stocks", "MSFT", *url)
    assert deleted.exit_code == 0 and orjson.loads(deleted.stdout)["data"] == {"price": 300}
    assert httpx.get(server.url + "/v1/stocks/MSFT").status_code == 404


def test_text_output_is_for_people(server):
    env = {"WATCHROUTE_URL": server.url}  # the environment names the server
    run("put", "stocks", "AAPL", '{"price": 1}', env=env)
    shown = run("get", "stocks", "AAPL", "-o", "text", env=env)
    assert shown.exit_code == 0
    assert "stocks/AAPL" in shown.stdout and "revision 1" in shown.stdout
    assert '"price": 1' in shown.stdout  # indented JSON, not one dense line
    table = run("list", "stocks", "-o", "text", env=env)
    assert "stocks at revision 1" in table.stdout and "AAPL" in table.stdout


def test_errors_go_to_stderr_with_exit_codes(server, tmp_path):
    url = ["--url", server.url]
    run("put", "stocks", "AAPL", '{"price": 1}', *url)
    cases = [
        (["get", "stocks", "NOPE", *url], 3, "does not exist"),
        (["put", "stocks", "AAPL", '{"price": 2}', "--if-match", "7", *url], 4, "PreconditionFailed"),
        (["put", "stocks", "AAPL", '{"price": 2}', "--create-only", *url], 4, "PreconditionFailed"),
        (["list", "_system", *url], 1, "ReservedName"),
        (["list", "stocks", "--filter", "price>", *url], 1, "BadFilter"),
        (["get", "stocks", "AAPL", "--url", "http://127.0.0.1:1"], 5, "cannot reach the server"),
        (["put", "stocks", "AAPL", "{nope", *url], 2, "not JSON"),
        (["put", "stocks", "AAPL", "[1]", *url], 2, "must be a JSON object"),
        (["put", "stocks", "AAPL", f"@{tmp_path / 'missing.json'}", *url], 2, "cannot read"),
    ]
    for args, code, message in cases:
        result = run(*args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        assert result.stdout == "", args
    assert httpx.get(server.url + "/v1/stocks/AAPL").json()["data"] == {"price": 1}


def _watch(server, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "watchroute", "watch", "stocks", *args, "--url", server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_watch_prints_ndjson_into_a_pipe(server, transport):
    with httpx.Client(base_url=server.url) as http:
        since = http.put("/v1/stocks/A", json={"n": 0}).json()["revision"]
        proc = _watch(server, "--since", str(since), "--count", "3", "--transport", transport)
        revisions = [http.put(f"/v1/stocks/{id}", json={"n": 1}).json()["revision"] for id in "ABC"]
        http.delete("/v1/stocks/A")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    events = [orjson.loads(line) for line in out.splitlines()]
    assert [(e["type"], e["revision"]) for e in events if e["type"] != "BOOKMARK"] == [
        ("MODIFIED", revisions[0]),
        ("ADDED", revisions[1]),
        ("ADDED", revisions[2]),
    ]


def test_watch_with_patches_prints_whole_objects(server):
    with httpx.Client(base_url=server.url) as http:
        http.put("/v1/stocks/Q", json={"bid": 1, "ask": 2, "venue": "X"})
        proc = _watch(server, "--patches", "--initial", "--count", "3")
        assert proc.stdout is not None
        assert orjson.loads(proc.stdout.readline())["type"] == "ADDED"
        assert orjson.loads(proc.stdout.readline())["type"] == "BOOKMARK"  # the state is in
        merge = {"Content-Type": "application/merge-patch+json"}
        http.patch("/v1/stocks/Q", json={"bid": 3}, headers=merge)
        http.patch("/v1/stocks/Q", json={"venue": None}, headers=merge)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    changes = [e for e in map(orjson.loads, out.splitlines()) if e["type"] == "MODIFIED"]
    assert [e["object"]["data"] for e in changes] == [
        {"bid": 3, "ask": 2, "venue": "X"},
        {"bid": 3, "ask": 2},
    ]


def test_watch_text_shows_the_current_state_then_changes(server):
    with httpx.Client(base_url=server.url) as http:
        http.put("/v1/stocks/AAPL", json={"price": 1})
        proc = _watch(server, "--initial", "--count", "2", "-o", "text")
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.split()[:2] == ["ADDED", "stocks/AAPL"] and '{"price":1}' in first
        assert "current state above" in proc.stdout.readline()
        http.put("/v1/stocks/MSFT", json={"price": 2})
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.split()[:3] == ["ADDED", "stocks/MSFT", "rev"]


def test_watch_past_the_history_exits_6_or_relists(make_server):
    server = make_server(history_events=5, compaction_interval=0.2)
    with httpx.Client(base_url=server.url) as http:
        for i in range(20):
            http.put(f"/v1/stocks/s{i % 3}", json={"i": i})
        deadline = time.monotonic() + 10
        while (
            http.get("/v1/stocks", params={"watch": "longpoll", "since": 1, "timeout": 0.05}).status_code
            != 410
        ):
            assert time.monotonic() < deadline, "never compacted"
            time.sleep(0.1)
    expired = run("watch", "stocks", "--since", "1", "--url", server.url)
    assert expired.exit_code == 6 and "list again" in expired.stderr
    relisted = run("watch", "stocks", "--since", "1", "--relist", "--count", "3", "--url", server.url)
    assert relisted.exit_code == 0, relisted.output
    events = [orjson.loads(line) for line in relisted.stdout.splitlines()]
    assert events[0]["type"] == "RESYNC"
    assert sorted(e["object"]["id"] for e in events[1:]) == ["s0", "s1", "s2"]


def test_help_lists_the_client_commands():
    result = run("--help")
    for command in ("serve", "get", "list", "put", "patch", "delete", "watch"):
        assert command in result.stdout
