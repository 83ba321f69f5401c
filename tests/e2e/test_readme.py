"""The README's tour does what it says: every curl command of "Five minutes with curl", in order,
against a fresh server, prints what the comment under it shows; and its CLI lines run as
written after `make serve`.

A comment line under a command is its output, `...` standing for the rest of a line and `#`
alone for an empty line; a comment in parentheses is a remark. A watch (`curl -N`) is cut off
after a moment: what it shows is what it prints at once.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

import httpx
import orjson
import pytest

from tests.support import REPO

README = REPO / "README.md"

pytestmark = pytest.mark.timeout(120)


@dataclass
class Step:
    command: str
    shows: list[str] = field(default_factory=list)

    def expected(self) -> re.Pattern[str]:
        lines = [re.escape(line).replace(re.escape("..."), "[^\n]*") for line in self.shows]
        return re.compile("\n".join(lines))


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def steps(block: str) -> list[Step]:
    """The commands of a block, a command running on over lines ending in a backslash or
    inside an open quote, each with the output lines shown under it."""
    out: list[Step] = []
    pending: list[str] = []
    for line in block.splitlines():
        if pending:
            pending.append(line)
        elif line.startswith("#"):
            shown = line[2:] if line.startswith("# ") else line[1:]
            if not shown.startswith("("):
                out[-1].shows.append(shown)
            continue
        elif line.strip():
            pending = [line]
        else:
            continue
        joined = "\n".join(pending)
        if joined.endswith("\\") or joined.count("'") % 2:
            continue
        out.append(Step(joined))
        pending = []
    return out


def tour() -> list[Step]:
    blocks = sh_blocks(section(README.read_text(), "Five minutes with curl"))
    return [step for block in blocks for step in steps(block)]


def test_the_tour_has_something_to_check():
    found = tour()
    assert len(found) >= 15
    for step in found:
        assert step.command.startswith("curl "), step.command
        assert step.shows, f"the README shows no output for: {step.command}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_every_curl_command_of_the_tour_prints_what_the_readme_shows(server):
    for step in tour():
        command = step.command.replace("localhost:8000", f"127.0.0.1:{server.port}")
        if " -N " in command:  # a watch runs until stopped: take what it prints at once
            command = command.replace("curl ", "curl -s --max-time 1.5 ", 1)
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
        assert done.returncode in (0, 28), (step.command, done.stderr)  # 28: the watch timed out
        assert step.expected().search(done.stdout), (
            f"\n{step.command}\nprinted:\n{done.stdout}\nthe README shows:\n" + "\n".join(step.shows)
        )


def test_the_cli_lines_run_as_written_after_make_serve(server):
    lines = [
        line.split("  #")[0].strip()
        for block in sh_blocks(section(README.read_text(), "Python client and CLI"))
        for line in block.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines and all(line.startswith(".venv/bin/watchroute ") for line in lines), lines
    exe = REPO / ".venv" / "bin" / "watchroute"
    if not exe.exists():
        pytest.skip(f"no {exe}: the suite runs outside the project's .venv")
    env = {**os.environ, "WATCHROUTE_URL": server.url, "COLUMNS": "200"}
    httpx.put(f"{server.url}/v1/stocks/AAPL", json={"symbol": "AAPL", "price": 189.5})  # the Python above
    put, listed, watch = lines
    done = subprocess.run(put, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["data"] == {"symbol": "MSFT", "price": 411}
    done = subprocess.run(listed, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "MSFT" in done.stdout, done.stderr
    done = subprocess.run(watch, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    events = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [(e["type"], e["object"]["id"]) for e in events] == [("ADDED", "AAPL"), ("ADDED", "MSFT")]
