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

from watchroute import __version__
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
        proc = _watch(server, "--patches", "--initial", "--count", "2")  # the two changes
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
        proc = _watch(server, "--initial", "--count", "1", "-o", "text")  # the state, then a change
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
    # The listing that replaces the lost history is state, not changes: --count 1 waits for a
    # change after it.
    relisting = _watch(server, "--since", "1", "--relist", "--count", "1")
    assert relisting.stdout is not None
    lines = [orjson.loads(relisting.stdout.readline()) for _ in range(5)]
    assert lines[0]["type"] == "RESYNC"
    assert sorted(e["object"]["id"] for e in lines[1:4]) == ["s0", "s1", "s2"]
    assert lines[4]["type"] == "BOOKMARK" and lines[4]["initial_events_end"]
    changed = httpx.put(server.url + "/v1/stocks/s0", json={"i": 99}).json()["revision"]
    out, err = relisting.communicate(timeout=20)
    assert relisting.returncode == 0, err
    assert [(e["type"], e["revision"]) for e in map(orjson.loads, out.splitlines())] == [
        ("MODIFIED", changed)
    ]


def test_help_lists_the_client_commands():
    result = run("--help")
    for command in ("serve", "get", "list", "put", "patch", "delete", "watch"):
        assert command in result.stdout


# -- the first hour: what a newcomer meets ------------------------------------------------------


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout == f"watchroute {__version__}\n"


def test_text_output_shows_brackets_as_they_are(server):
    url = ["--url", server.url]
    # The server's own message, with a regular expression in it.
    bad_name = run("get", "Stocks", "AAPL", *url, env={"COLUMNS": "300"})
    assert bad_name.exit_code == 1
    assert "^[a-z][a-z0-9_-]{0,62}$" in bad_name.stderr, bad_name.stderr
    # A document and an id with what rich would read as markup.
    data = '{"note": "[bold]loud[/bold] [red]x"}'
    assert run("put", "stocks", "X1", data, *url).exit_code == 0
    shown = run("get", "stocks", "X1", "-o", "text", *url, env={"COLUMNS": "300"})
    assert "stocks/X1" in shown.stdout and "[bold]loud[/bold] [red]x" in shown.stdout
    table = run("list", "stocks", "-o", "text", *url, env={"COLUMNS": "300"})
    assert "X1" in table.stdout and "[bold]loud[/bold] [red]x" in table.stdout
    watched = _watch(server, "--initial", "--count", "1", "-o", "text")
    assert watched.stdout is not None
    state = watched.stdout.readline()
    assert "stocks/X1" in state and "[bold]loud[/bold] [red]x" in state
    assert "current state above" in watched.stdout.readline()
    httpx.put(server.url + "/v1/stocks/Y1", json={"note": "[i]y[/i]"})
    out, err = watched.communicate(timeout=20)
    assert watched.returncode == 0, err
    assert "stocks/Y1" in out and "[i]y[/i]" in out


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:8000/v1", "give the server's root URL, http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/v1/", "give the server's root URL, http://127.0.0.1:8000"),
        ("127.0.0.1:8000", "expected http://HOST:PORT, e.g. http://127.0.0.1:8000"),
        ("localhost", "expected http://HOST:PORT, e.g. http://localhost"),
        ("ftp://host", "expected http://HOST:PORT"),
    ],
)
def test_a_url_that_cannot_be_a_server_is_a_usage_error(url, message):
    for how in (["--url", url], []):
        result = run("get", "stocks", "AAPL", *how, env={"WATCHROUTE_URL": url, "COLUMNS": "300"})
        assert result.exit_code == 2, result.output
        assert message in result.output, result.output


def test_a_mounted_server_url_with_a_path_is_fine(server):
    # Embedded under a prefix, the root URL has a path: only /v1 itself is refused.
    result = run("get", "stocks", "NOPE", "--url", server.url + "/")
    assert result.exit_code == 3, result.output


def test_watch_json_leaves_heartbeats_out_unless_asked(server):
    with httpx.Client(base_url=server.url) as http:
        since = http.put("/v1/stocks/A", json={"n": 0}).json()["revision"]
        quiet = _watch(server, "--since", str(since), "--count", "1", "--heartbeat", "1")
        chatty = _watch(server, "--since", str(since), "--count", "1", "--heartbeat", "1", "--bookmarks")
        assert chatty.stdout is not None
        for _ in range(2):  # two heartbeats, which the quiet one, started first, had too
            assert orjson.loads(chatty.stdout.readline()) == {"type": "BOOKMARK", "revision": since}
        changed = http.put("/v1/stocks/B", json={"n": 1}).json()["revision"]
    out, err = quiet.communicate(timeout=20)
    assert quiet.returncode == 0, err
    assert [(e["type"], e["revision"]) for e in map(orjson.loads, out.splitlines())] == [("ADDED", changed)]
    out, err = chatty.communicate(timeout=20)
    assert chatty.returncode == 0, err
    assert orjson.loads(out.splitlines()[-1])["revision"] == changed


def test_watch_count_counts_changes_after_the_initial_state(server):
    with httpx.Client(base_url=server.url) as http:
        for id in "ABC":
            http.put(f"/v1/stocks/{id}", json={"n": 0})
        proc = _watch(server, "--initial", "--count", "2")
        assert proc.stdout is not None
        state = [orjson.loads(proc.stdout.readline()) for _ in range(4)]
        assert [e["type"] for e in state] == ["ADDED", "ADDED", "ADDED", "BOOKMARK"]
        assert proc.poll() is None  # three resources listed, and no change yet
        first = http.put("/v1/stocks/A", json={"n": 1}).json()["revision"]
        second = http.delete("/v1/stocks/B").json()["revision"]
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert [(e["type"], e["revision"]) for e in map(orjson.loads, out.splitlines())] == [
        ("MODIFIED", first),
        ("DELETED", second),
    ]


def test_watch_tells_a_terminal_when_it_reconnects(server):
    import os
    import pty

    since = httpx.put(server.url + "/v1/stocks/A", json={"n": 0}).json()["revision"]
    leader, follower = pty.openpty()
    args = ["watch", "stocks", "--since", str(since), "--count", "1", "--url", server.url]
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchroute", *args],
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    )
    os.close(follower)
    try:
        time.sleep(1.0)  # connected
        server.restart()
        changed = httpx.put(server.url + "/v1/stocks/B", json={"n": 1}).json()["revision"]
        out, _ = proc.communicate(timeout=30)
        notices = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            notices += chunk
    finally:
        proc.kill()
        os.close(leader)
    assert proc.returncode == 0
    assert orjson.loads(out.splitlines()[-1])["revision"] == changed
    text = notices.decode()
    assert "reconnecting in" in text and "connected again" in text, text


def test_watch_says_nothing_on_stderr_when_it_is_not_a_terminal(server):
    since = httpx.put(server.url + "/v1/stocks/A", json={"n": 0}).json()["revision"]
    proc = _watch(server, "--since", str(since), "--count", "1")
    time.sleep(1.0)
    server.restart()
    httpx.put(server.url + "/v1/stocks/B", json={"n": 1})
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err == ""
