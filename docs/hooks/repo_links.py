"""mkdocs hook: a link to a repository file outside docs/ works in the built site too.

The pages link as GitHub shows them, relative to their own file (docs/performance.md links
``../benchmarks/RESULTS.md``; the front page, README.md included by docs/index.md, links
``apps/olympics/README.md``). In the site such a file is either:

- published by a page that includes it with include-markdown (docs/benchmarks/results.md
  includes ``../../benchmarks/RESULTS.md``): the link goes to that page, anchor kept;
- or not published (a source folder such as ``apps/olympics_streams``): the link points into the
  repository when ``repo_url`` is set, else it becomes its text, as the site has nothing to show.

A link whose target exists nowhere is left as written, so ``mkdocs build --strict`` still fails on
it. A folder inside docs/ (``asyncapi/``) is not a page either: it is treated as unpublished.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

INCLUDE = re.compile(r"""\{%\s*include-markdown\s+["']([^"']+)["']""")
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s]+)\)")
EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|//|#|/)", re.IGNORECASE)
FENCE = re.compile(r"^\s*(```|~~~)")

# Where a repository file is published: its absolute path -> the src_uri of the page including it.
_published: dict[Path, str] = {}


def on_files(files: Any, config: Any) -> Any:
    _published.clear()
    for file in files.documentation_pages():
        source = Path(file.abs_src_path)
        for included in INCLUDE.findall(source.read_text(encoding="utf-8")):
            _published[(source.parent / included).resolve()] = file.src_uri
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return rewrite(
        markdown,
        page_src=Path(page.file.abs_src_path),
        page_uri=page.file.src_uri,
        docs_dir=Path(config["docs_dir"]).resolve(),
        repo_root=Path(config["config_file_path"]).resolve().parent,
        repo_url=config.get("repo_url"),
        published=_published,
    )


def rewrite(
    markdown: str,
    *,
    page_src: Path,
    page_uri: str,
    docs_dir: Path,
    repo_root: Path,
    repo_url: str | None,
    published: dict[Path, str],
) -> str:
    """The page's markdown with its links to repository files outside the site redirected."""

    def replace(match: re.Match[str]) -> str:
        text, target = match.group("text"), match.group("target")
        if EXTERNAL.match(target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (page_src.parent / unquote(path)).resolve()
        fragment = f"#{anchor}" if anchor else ""
        if resolved in published:
            relative = posixpath.relpath(published[resolved], posixpath.dirname(page_uri) or ".")
            return f"[{text}]({relative}{fragment})"
        if not resolved.exists() or not resolved.is_relative_to(repo_root):
            return match.group(0)  # broken: left for mkdocs to report
        if resolved.is_relative_to(docs_dir) and resolved.is_file():
            return match.group(0)  # a page or a file of the site: mkdocs checks and converts it
        if repo_url:
            kind = "tree" if resolved.is_dir() else "blob"
            return f"[{text}]({repo_url.rstrip('/')}/{kind}/HEAD/{resolved.relative_to(repo_root).as_posix()})"
        return text

    out: list[str] = []
    fenced = False
    for line in markdown.splitlines(keepends=True):
        if FENCE.match(line):
            fenced = not fenced
        out.append(line if fenced else LINK.sub(replace, line))
    return "".join(out)
