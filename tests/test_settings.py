"""Each default stated once, in eventbus._settings, and the CLI a view of it: the parser, its defaults, the docs."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

import pytest

from eventbus._cli import build_parser, shown_default
from eventbus._settings import (
    CLI,
    CODE_ONLY,
    ConnectionSettings,
    Settings,
    as_options,
    command_options,
    field_default,
    from_options,
    setting_fields,
    settings_from,
)

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("run", "publish", "check", "streams", "dead-letters")
# The options of `run` that are not settings of a run but of the process around it.
PROCESS_OPTIONS = {"--url-file", "--loop", "--workers", "--reload", "--as-worker", "-h", "--help"}


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sub: argparse.ArgumentParser = commands.choices[name]
    return sub


def parsed(command: str) -> argparse.Namespace:
    """What the parser makes of ``command`` given nothing but its positional arguments."""
    positional = {"run": ["mod"], "publish": ["channel"], "check": [], "streams": ["mod"], "dead-letters": ["list"]}
    return build_parser().parse_args([command, *positional[command]])


def command_defaults(command: str) -> dict[str, object]:
    """The defaults a command declares where they differ from the fields' own (derived, never restated)."""
    return {o.name: o.default for o in command_options(command) if command in o.option.defaults}


def test_the_run_parsers_defaults_are_the_settings_defaults() -> None:
    """`run` with no option runs exactly Settings(), but for the defaults the CLI declares as its own."""
    declared = command_defaults("run")
    assert declared == {"stats_interval": 60.0}  # a summary line every minute from the CLI; none from code
    assert from_options(vars(parsed("run"))) == settings_from(**declared)
    assert replace(from_options(vars(parsed("run"))), stats_interval=None) == Settings()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_setting_options_default_to_the_field_or_its_declared_default(command: str) -> None:
    namespace = vars(parsed(command))
    fields = {f.name: f for f in setting_fields()}
    for offered in command_options(command):
        expected = offered.option.defaults.get(command, field_default(fields[offered.name]))
        value = namespace[offered.name]
        assert (tuple(value) if offered.option.repeat else value) == expected, offered.name


def test_every_setting_is_on_the_command_line_or_says_why_not() -> None:
    flags = {o for a in subcommand("run")._actions for o in a.option_strings}
    for field in setting_fields():
        offered, why = field.metadata.get(CLI), field.metadata.get(CODE_ONLY)
        assert (offered is None) != (why is None), f"{field.name}: either an Option or the reason it has none"
        if offered is not None:
            assert "run" in offered.commands and offered.flag in flags, field.name
        else:
            assert why.strip(), field.name
    settings = {o.option.flag for o in command_options("run")}
    assert flags - settings == PROCESS_OPTIONS, (
        "a new option of `run`: make it a setting, or list it as a process option"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_help_texts_show_the_default_the_command_uses(command: str) -> None:
    actions = {a.dest: a for a in subcommand(command)._actions}
    for offered in command_options(command):
        action = actions[offered.name]
        assert action.help is not None and "{default}" not in action.help
        if "{default}" in offered.option.help:
            assert f"({shown_default(offered.default)})" in action.help or f"; {offered.default})" in action.help
        if offered.option.env is not None:
            assert f"${offered.option.env}" in action.help, offered.name


def test_settings_from_flat_options_and_back() -> None:
    settings = settings_from(grace=3.0, ping_interval=1.0, embedded=False, middleware=["pkg.mod:fn"])
    assert settings.connection == ConnectionSettings(ping_interval=1.0, embedded=False)
    assert settings.middleware == ("pkg.mod:fn",)
    assert settings_from(**as_options(settings)) == settings
    with pytest.raises(TypeError, match="unexpected keyword argument 'gracee'"):
        settings_from(gracee=1.0)


def test_zero_disables_where_the_help_says_so() -> None:
    namespace = vars(build_parser().parse_args(["run", "mod", "--max-payload", "0", "--stats-interval", "0"]))
    settings = from_options(namespace)
    assert settings.max_payload is None and settings.stats_interval is None


# -- docs/cli.md's table of `run` options: exactly the parser's, with its defaults --------------


def documented_options() -> dict[str, str]:
    """``{flag: default cell}`` from the table of `run` options in docs/cli.md."""
    text = (ROOT / "docs" / "cli.md").read_text()
    table = text[text.index("| option | default | meaning |") :].split("\n\n")[0]
    found: dict[str, str] = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        flags = re.findall(r"`(--[a-z-]+)", cells[0])
        defaults = cells[1].split(", ") if len(flags) > 1 else [cells[1]]
        assert len(defaults) == len(flags), row
        found |= dict(zip(flags, defaults, strict=True))
    return found


def test_the_documented_run_options_are_the_parsers_with_the_same_defaults() -> None:
    actions = [a for a in subcommand("run")._actions if a.option_strings and a.help != argparse.SUPPRESS]
    actions = [a for a in actions if a.option_strings != ["-h", "--help"]]
    documented = documented_options()
    assert set(documented) == {a.option_strings[0] for a in actions}
    envs = {o.option.flag: o.option.env for o in command_options("run") if o.option.env}
    for action in actions:
        cell = documented[action.option_strings[0]]
        flag_only = action.nargs == 0
        if flag_only or action.default in (None, []):
            # Off, none, or what the environment says: not a value the parser would pass on.
            assert cell in ("off", "none") or cell.startswith("`$"), (action.option_strings, cell)
        else:
            assert cell.strip("`") == shown_default(action.default), (action.option_strings, cell)
        if action.option_strings[0] in envs:
            assert f"`${envs[action.option_strings[0]]}`" in cell, (action.option_strings, cell)
