"""Docs that run: the README's commands parse against the real CLI, and its family table covers
every registered family and variant count."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from exporter.cli import cli
from model_defs import list_families, list_models

README = (Path(__file__).parents[1] / "README.md").read_text()


def _bbexport_commands() -> list[list[str]]:
    commands = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("bbexport "):
                commands.append(shlex.split(line)[1:])
    return commands


@pytest.mark.parametrize("args", _bbexport_commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses(args: list[str]) -> None:
    """Every `bbexport ...` line in the README names a real command with real options."""
    group_ctx = cli.make_context("bbexport", list(args), resilient_parsing=True)
    command = cli.get_command(group_ctx, args[0])
    assert command is not None, f"README uses unknown command {args[0]!r}"
    try:
        command.make_context(args[0], list(args[1:]))
    except click.UsageError as e:  # pragma: no cover - the message is the assertion
        pytest.fail(f"README command `bbexport {' '.join(args)}` does not parse: {e}")


def test_family_table_lists_every_registered_family() -> None:
    rows = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\| `(\w+)` \| (\d+) \|", README, flags=re.M)}
    for family in list_families():
        assert family in rows, f"README family table lacks {family}"
        assert rows[family] == len(list_models(family=family)), f"README variant count of {family} is stale"


def test_demo_and_test_commands_are_documented() -> None:
    assert "make demo" in README and "make test" in README
