"""The documentation site (mkdocs.yml, docs/): its nav, and the hooks that build it.

``mkdocs build --strict`` (scripts/check) builds the site itself; these tests say in a second what
would make it fail or mislead, without building it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.cli_process import ROOT

DOCS = ROOT / "docs"


class _MkdocsLoader(yaml.SafeLoader):
    """mkdocs.yml's ``!!python/...`` tags (the slugify function) read as None: only the nav matters here."""


_MkdocsLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def mkdocs_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_MkdocsLoader)
    return config


def nav_pages(entries: list[Any]) -> list[str]:
    pages: list[str] = []
    for entry in entries:
        if isinstance(entry, str):
            pages.append(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                pages.extend(nav_pages(value) if isinstance(value, list) else [value])
    return pages


def test_the_nav_names_every_page_and_only_pages_that_exist() -> None:
    named = nav_pages(mkdocs_config()["nav"])
    pages = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
    assert sorted(set(named)) == sorted(named), f"a page is named twice in the nav: {named}"
    assert not set(pages) - set(named), f"pages missing from mkdocs.yml's nav: {sorted(set(pages) - set(named))}"
    assert not set(named) - set(pages), f"nav entries with no page in docs/: {sorted(set(named) - set(pages))}"


def test_strict_fails_on_every_broken_link_anchor_and_nav_entry() -> None:
    """By default mkdocs only reports (INFO) a page left out of the nav and a broken anchor."""
    config = mkdocs_config()
    assert config["strict"] is True
    levels = [level for group in config["validation"].values() for level in group.values()]
    assert levels and set(levels) == {"warn"}, config["validation"]


def test_the_site_fetches_nothing_at_build_time() -> None:
    config = mkdocs_config()
    assert config["theme"]["font"] is False  # Google Fonts
    plugins = {next(iter(p)) if isinstance(p, dict) else p for p in config["plugins"]}
    assert not plugins & {"privacy", "social", "material/privacy", "material/social"}, plugins


def load_hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DOCS / "hooks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for name in ("docs/guide.md", "docs/benchmarks/results.md", "docs/asyncapi/a.yaml", "benchmarks/RESULTS.md",
                 "apps/olympics_streams/__init__.py", "README.md"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    return tmp_path


def rewrite(repo: Path, markdown: str, page: str = "guide.md", repo_url: str | None = None) -> str:
    hook = load_hook("repo_links")
    result: str = hook.rewrite(
        markdown,
        page_src=repo / "docs" / page,
        page_uri=page,
        docs_dir=repo / "docs",
        repo_root=repo,
        repo_url=repo_url,
        published={(repo / "benchmarks/RESULTS.md").resolve(): "benchmarks/results.md"},
    )
    return result


def test_a_link_to_an_included_file_goes_to_the_page_that_includes_it(repo: Path) -> None:
    out = rewrite(repo, "see [RESULTS.md](../benchmarks/RESULTS.md#drain) and [it](../benchmarks/RESULTS.md)")
    assert out == "see [RESULTS.md](benchmarks/results.md#drain) and [it](benchmarks/results.md)"
    from_a_subfolder = rewrite(repo, "[r](../../benchmarks/RESULTS.md)", page="benchmarks/other.md")
    assert from_a_subfolder == "[r](results.md)"


def test_a_link_to_an_unpublished_repository_path_keeps_its_text_or_goes_to_repo_url(repo: Path) -> None:
    markdown = "[apps/olympics_streams](../apps/olympics_streams) and [docs/asyncapi/](asyncapi/)"
    assert rewrite(repo, markdown) == "apps/olympics_streams and docs/asyncapi/"
    assert rewrite(repo, markdown, repo_url="https://example.org/eventbus/") == (
        "[apps/olympics_streams](https://example.org/eventbus/tree/HEAD/apps/olympics_streams) and "
        "[docs/asyncapi/](https://example.org/eventbus/tree/HEAD/docs/asyncapi)"
    )


def test_pages_external_links_broken_links_and_code_are_left_for_mkdocs(repo: Path) -> None:
    markdown = (
        "[a page](guide.md#typed) [a file](asyncapi/a.yaml) [web](https://mypyc.readthedocs.io/) "
        "[anchor](#flow-control) [broken](../benchmarks/MISSING.md) ![img](../benchmarks/RESULTS.md)\n"
        "```python\nx = '[RESULTS](../benchmarks/RESULTS.md)'\n```\n"
    )
    assert rewrite(repo, markdown) == markdown


def test_sphinx_roles_read_as_code_in_the_api_reference() -> None:
    plain = load_hook("sphinx_roles").plain
    assert plain("A :class:`~eventbus.Runner` and :func:`compose`.") == "A `Runner` and `compose`."
    assert (
        plain(":mod:`eventbus.middleware`, :exc:`~eventbus._errors.LoadError`") == "`eventbus.middleware`, `LoadError`"
    )
