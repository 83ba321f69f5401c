"""`watchroute serve` as a newcomer meets it: a bad setting is one line and exit 2, the help
names every setting with its variable and default, the server says where it listens, and its
log can be JSON lines, with an access log on request."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from tests.support import REPO
from tests.support.server import free_port
from watchroute import __version__
from watchroute.cli import app
from watchroute.serve_help import flag_type
from watchroute.settings import GROUPS, Settings

pytestmark = pytest.mark.timeout(60)

runner = CliRunner()
WIDE = {"COLUMNS": "400"}  # the message on one line of the help's box


def serve(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["serve", *args], env={**WIDE, **(env or {})})


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--database", "mysql://localhost/test"],
            {},
            "Invalid value for '--database': unsupported database URL 'mysql://localhost/test'",
        ),
        (["--port", "99999"], {}, "Invalid value for '--port': Input should be less than or equal to 65535"),
        (
            [],
            {"WATCHROUTE_PORT": "http"},
            "Invalid value for WATCHROUTE_PORT: Input should be a valid integer",
        ),
        (["--auth", "bogus"], {}, "Invalid value for '--auth': Input should be 'none', 'apikey' or 'jwt'"),
        (["--auth", "jwt"], {}, "Invalid value: auth=jwt needs --jwt-secret, --jwt-public-key or --jwks-url"),
        (["--log-format", "xml"], {}, "Invalid value for '--log-format': Input should be 'text' or 'json'"),
        (
            ["--auth", "jwt", "--jwt-public-key", "/nonexistent/key.pem"],
            {},
            "Invalid value for '--jwt-public-key': No such file or directory: /nonexistent/key.pem",
        ),
        (
            ["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
            {},
            "Invalid value for '--tls-cert': cannot load /nonexistent/cert.pem: No such file or directory",
        ),
        (
            ["--rules", '{"notes": "owner="}'],
            {},
            "Invalid value: the rule for 'notes' is not a valid filter: expected a value after '='",
        ),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(args, env, message):
    result = serve(*args, env=env)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    said = [line for line in result.output.splitlines() if "Invalid value" in line]
    assert len(said) == 1 and message in said[0], result.output


def test_a_database_in_a_directory_that_does_not_exist_is_refused(tmp_path: Path):
    missing = tmp_path / "no" / "such"
    result = serve("--database", f"sqlite:///{missing}/watchroute.db")
    assert result.exit_code == 2, result.output
    assert f"the database's directory {missing} does not exist" in result.output
    assert not (tmp_path / "no").exists()  # nothing was made


def test_version_flag_and_serve_help_name_every_setting_under_its_group():
    assert runner.invoke(app, ["--version"]).stdout == f"watchroute {__version__}\n"
    shown = runner.invoke(app, ["serve", "--help"], env=WIDE)
    assert shown.exit_code == 0
    text = shown.stdout
    fields = Settings.model_fields
    flags: dict[str, str] = {}  # flag's setting -> the panel it is shown in
    panel = ""
    for line in text.splitlines():
        if line.startswith("╭─ "):
            panel = line.removeprefix("╭─ ").split(" ─")[0]
        m = re.match(r"│ --([a-z-]+)\s", line)
        if m and m.group(1) != "help":
            name = m.group(1).replace("-", "_")
            flags[name] = panel
            assert name in fields, line
            # Every flag says what it is, its variable once, and its default when it has one.
            help = line.split("WATCHROUTE_")[0].split(">", 1)[1].strip()
            assert help and not help.startswith("["), line
            assert line.count(f"WATCHROUTE_{name.upper()}") == 1, line
            default = fields[name].default
            if default not in (None, ""):
                shown_default = str(default).lower() if isinstance(default, bool) else str(default)
                assert f"[default: {shown_default}]" in line, line
    assert set(flags) == set(fields), "every setting is a flag"
    for group, model in GROUPS.items():
        panels = {flags[name] for name in model.model_fields}
        assert len(panels) == 1 and panels.pop().lower().startswith(group), group


# Values a string setting may take, tried in turn: the first its checks accept is used.
STRINGS = [
    "FULL",
    "json",
    "apikey",
    "debug",
    "10/s",
    "10.0.0.0/8",
    "other_name",
    "s" * 32,
    '{"n": "o=$sub"}',
]
# Settings valid only with another one: given together below.
TOGETHER = {"tls_cert": "c.pem", "tls_key": "k.pem"}


def other_value(name: str) -> str | None:
    """A value of the setting other than its default, as typed on a command line."""
    field = Settings.model_fields[name]
    default = field.default
    kind = flag_type(field)
    if kind is bool:
        candidates = [str(not default).lower()]
    elif kind in (int, float):
        base = default or 0
        candidates = [str(kind(base + 1)), str(kind(base - 1)), "17", "0.75"]
    else:
        candidates = STRINGS
    for candidate in candidates:
        try:
            overrides: dict[str, Any] = {name: candidate}
            made = Settings(**overrides)
        except (ValueError, TypeError):
            continue
        if getattr(made, name) != default:
            return candidate
    return None


def _settings_from(args: list[str], env: dict[str, str]) -> Settings:
    """The settings `serve` would start with, given these flags and this environment."""
    made: list[Settings] = []
    clean = {k: None for k in os.environ if k.startswith("WATCHROUTE_")}
    with (
        patch("watchroute.server.serve.serve", made.append),
        patch("watchroute.server.serve.check", lambda settings: None),
        patch("watchroute.capture.capturer.preflight", lambda settings: None),
    ):
        result = runner.invoke(app, ["serve", *args], env={**clean, **env})
    assert result.exit_code == 0, result.output
    return made[0]


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_a_flag_and_its_variable_give_the_same_setting(name):
    if name in TOGETHER:
        given = TOGETHER
    else:
        value = other_value(name)
        assert value is not None, f"no value found for {name}: add it to STRINGS or TOGETHER"
        given = {name: value}
    args = []
    for setting, value in given.items():
        option = "--" + setting.replace("_", "-")
        if flag_type(Settings.model_fields[setting]) is bool:
            args.append(option if value == "true" else "--no-" + option[2:])
        else:
            args += [option, value]
    by_flag = _settings_from(args, {})
    by_variable = _settings_from([], {f"WATCHROUTE_{k.upper()}": v for k, v in given.items()})
    assert getattr(by_flag, name) == getattr(by_variable, name) != Settings.model_fields[name].default


def test_a_flag_wins_over_its_variable():
    assert _settings_from(["--port", "9001"], {"WATCHROUTE_PORT": "9002"}).port == 9001


def test_the_client_url_names_its_variable_once():
    text = runner.invoke(app, ["get", "--help"], env=WIDE).stdout
    assert text.count("WATCHROUTE_URL") == 1


def test_every_setting_is_in_the_docs():
    """Documented: its flag, its variable or its name in README.md or docs/."""
    docs = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    words = set(re.findall(r"[\w-]+", docs))  # once: the docs are large, the settings many
    missing = [
        name
        for name in Settings.model_fields
        if not {name, f"WATCHROUTE_{name.upper()}", "--" + name.replace("_", "-")} & words
    ]
    assert not missing, f"settings the docs do not mention: {missing}"


# -- the running server's own lines ------------------------------------------------------------


def _start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHROUTE_")}
    database = f"sqlite:///{tmp_path / 'w.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchroute", "serve", "--port", str(port), "--database", database, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("the server did not start")


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.terminate()
    return proc.communicate(timeout=20)


def test_the_server_says_what_it_serves_and_where(tmp_path: Path):
    proc, url = _start(tmp_path)
    _, err = _stop(proc)
    line = next(line for line in err.splitlines() if "serving" in line)
    assert f"watchroute {__version__}" in line
    assert f"sqlite:///{tmp_path / 'w.db'}" in line and url in line
    assert f"{url}/ui" in line and f"{url}/docs" in line
    # No access log unless asked for.
    assert "GET /healthz" not in err


def test_json_logs_and_the_access_log(tmp_path: Path):
    proc, url = _start(tmp_path, "--log-format", "json", "--access-log")
    httpx.put(url + "/v1/stocks/A", json={"n": 1})
    httpx.get(url + "/v1/stocks", params={"access_token": "s3cret-token", "limit": 5})
    out, err = _stop(proc)
    lines = [orjson.loads(line) for line in (out + err).splitlines() if line.strip()]  # every one JSON
    assert all({"ts", "level", "logger"} <= line.keys() for line in lines)
    assert any(f"watchroute {__version__} serving" in line.get("message", "") for line in lines)
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert {"method": "PUT", "path": "/v1/stocks/A", "status": 201}.items() <= access[-2].items()
    # The request as served: the credential was taken out of its query before it was logged.
    assert access[-1]["path"] == "/v1/stocks?limit=5"
    assert "s3cret-token" not in out + err
