"""Every code block of README.md, the docs pages and apps/*/README.md runs, as written, against a private redis-server.

The documents are README.md, every ``docs/**/*.md`` (a page added later is covered without a
change here) and the apps' READMEs. How a block is run follows from its language and an optional
HTML comment just before it:

- ``python`` whose first line is ``# path.py``: written to that path in a scratch folder, where
  later blocks of the same document, and every block of the other documents, can import or run it
  (``docs/operations.md`` checks the ``shop.handlers`` of ``docs/guide.md``); so one path is
  written by one document only;
- ``python`` defining ``test_...`` functions: run with ``python -m pytest --asyncio-mode=auto``;
- any other ``python``: run as a script (``<!-- run: call NAME -->`` then awaits ``NAME()``);
- ``bash`` / ``console``: each command (``$ `` prompts stripped in console blocks) runs in the
  scratch folder and must exit 0; ``<!-- run: serve -->``: one long-running command, which must
  log that it subscribed (or that the dashboard serves), then stop cleanly on SIGTERM;
- ``<!-- not-run: REASON -->``: shown as a skip with its reason, so every block left out is visible.

``text`` blocks are output, not code. An untagged block fails: say what it is. Every block runs
with ``$EVENTBUS_URL`` set to the private server, and the README's ``redis://localhost:6379/0``
replaced by it, so nothing touches a server on :6379.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_process import ROOT, EventbusProcess
from tests.redis_server import RedisServer

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted(ROOT.glob("apps/*/README.md"))]
# yaml: configuration for other tools (a Kubernetes manifest); such a block must say not-run.
CODE = {"python", "bash", "sh", "console", "shell", "yaml"}
NOT_CODE = {"text", "toml", "ini", "json", "csv"}
FENCE = re.compile(r"^```([\w+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*(run|not-run):\s*(.*?)\s*-->\s*$")
HEADER = re.compile(r"^#\s*([\w./-]+\.py)\s*$")
DEFAULT_URL = "redis://localhost:6379/0"


@dataclass
class Block:
    document: Path
    line: int
    language: str
    code: str
    marker: tuple[str, str] | None

    @property
    def id(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"

    @property
    def path(self) -> str | None:
        first = self.code.splitlines()[0] if self.code else ""
        match = HEADER.match(first)
        return match.group(1) if match and self.language == "python" else None


def blocks(document: Path) -> list[Block]:
    found: list[Block] = []
    lines = document.read_text().splitlines()
    i = 0
    marker: tuple[str, str] | None = None
    while i < len(lines):
        match = MARKER.match(lines[i])
        if match:
            marker = (match.group(1), match.group(2))
        fence = FENCE.match(lines[i])
        if fence:
            start = i
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            found.append(Block(document, start + 1, fence.group(1), "\n".join(body) + "\n", marker))
            marker = None
        elif lines[i].strip() and not match:
            marker = None  # a marker applies to the block right after it (blank lines allowed)
        i += 1
    return found


ALL = [block for document in DOCUMENTS for block in blocks(document)]


def test_every_block_says_what_it_is() -> None:
    untagged = [b.id for b in ALL if not b.language]
    assert not untagged, f"untagged code blocks (tag them python, bash, console or text): {untagged}"
    unknown = [b.id for b in ALL if b.language not in CODE | NOT_CODE]
    assert not unknown, f"blocks in a language this test does not know: {unknown}"
    unmarked = [b.id for b in ALL if b.language == "yaml" and not (b.marker and b.marker[0] == "not-run")]
    assert not unmarked, f"yaml blocks cannot run here; mark them <!-- not-run: REASON -->: {unmarked}"


def test_ci_runs_the_quickstart_commands() -> None:
    """The Quickstart's two commands are what .ci/run runs in its new virtualenv."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet -e '.[dev]'" in ci and "bash scripts/test" in ci
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e '.[dev]' && python -m eventbus run apps.olympics" in readme
    assert "bash scripts/test " in readme


def writes_a_file(block: Block) -> bool:
    return block.path is not None and (block.marker is None or block.marker[0] != "not-run")


def test_each_file_is_written_by_one_document() -> None:
    """A page may use a file another page writes, so that file must have one author."""
    writers: dict[str, set[str]] = {}
    for block in ALL:
        if writes_a_file(block):
            writers.setdefault(block.path or "", set()).add(str(block.document.relative_to(ROOT)))
    shared = {path: sorted(documents) for path, documents in writers.items() if len(documents) > 1}
    assert not shared, f"files written by more than one document (rename one): {shared}"


def scratch_with_files(block: Block, scratch: Path, url: str) -> None:
    # The files this block may use: those of the other documents, then those of its own
    # document's earlier blocks.
    others = [b for b in ALL if b.document != block.document]
    own = [b for b in blocks(block.document) if b.line < block.line]
    for earlier in [*others, *own]:
        if writes_a_file(earlier):
            target = scratch / (earlier.path or "")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(earlier.code.replace(DEFAULT_URL, url))


def environment(subprocess_env: dict[str, str], scratch: Path, url: str) -> dict[str, str]:
    env = dict(subprocess_env)
    # The scratch folder first (the README's own files), then the repository (apps.*), as for a
    # user who works in a checkout with `pip install -e .`.
    env["PYTHONPATH"] = f"{scratch}:{ROOT}"
    env["EVENTBUS_URL"] = url
    env["EVENTBUS_DEFAULT_URL"] = url
    env.pop("PYTEST_ADDOPTS", None)
    return env


def commands(block: Block) -> list[str]:
    out = []
    for line in block.code.splitlines():
        if block.language == "console":
            if line.startswith("$ "):
                out.append(line[2:])
            continue  # output
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            out.append(stripped)
    return out


def run(cmd: list[str] | str, scratch: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=scratch, env=env, shell=isinstance(cmd, str), capture_output=True, text=True, timeout=90
    )


@pytest.mark.parametrize("block", [b for b in ALL if b.language in CODE], ids=lambda b: b.id)
def test_document_block_runs(
    block: Block, redis_server: RedisServer, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    if block.marker and block.marker[0] == "not-run":
        pytest.skip(f"{block.id}: {block.marker[1]}")
    url = redis_server.url
    scratch_with_files(block, tmp_path, url)
    env = environment(subprocess_env, tmp_path, url)
    code = block.code.replace(DEFAULT_URL, url)
    mode = block.marker[1] if block.marker else ""

    if block.language == "python":
        if block.path:
            # A file for later blocks: it must at least compile as written.
            compile(code, block.path, "exec")
            return
        if re.search(r"^(async )?def test_", code, re.M):
            (tmp_path / "test_block.py").write_text(code)
            result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--asyncio-mode=auto",
                          "test_block.py"], tmp_path, env)  # fmt: skip
        else:
            call = re.fullmatch(r"call (\w+)", mode)
            if call:
                code += f"\n\nimport asyncio\n\nasyncio.run({call.group(1)}())\n"
            (tmp_path / "block.py").write_text(code)
            result = run([sys.executable, "block.py"], tmp_path, env)
        assert result.returncode == 0, f"{block.id}:\n{code}\n{result.stdout}\n{result.stderr}"
        return

    cmds = commands(block)
    if mode == "serve":
        assert len(cmds) == 1, f"{block.id}: a served block holds one command"
        process = EventbusProcess(["-c", cmds[0]], env, command=["bash"], cwd=tmp_path)
        try:
            process.wait_for(r"subscribed to \d+ channel|eventbus dashboard at", timeout=60)
            process.signal(signal.SIGTERM)
            assert process.wait(30) == 0, process.output
        finally:
            process.kill()
        return
    for cmd in cmds:
        result = run(cmd, tmp_path, env)
        assert result.returncode == 0, f"{block.id}: {cmd}\n{result.stdout}\n{result.stderr}"
