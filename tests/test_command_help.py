"""Every option of every console script has help text that states its default; --traceback is listed wherever the
script turns errors into one line."""
from __future__ import annotations

import argparse
import importlib
import os
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    SCRIPTS = tomllib.load(f)["project"]["scripts"]
WITHOUT_TRACEBACK = {"nnUNetv2_universal_trainer_folder", "nnUNetv2_universal_demo"}  # no error to shorten


class _Captured(BaseException):
    def __init__(self, parser):
        super().__init__()
        self.parser = parser


def parser_of(script: str) -> argparse.ArgumentParser:
    module, function = SCRIPTS[script].split(":")
    main = getattr(importlib.import_module(module), function)

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    saved = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        main([])
    except _Captured as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args = saved
    raise AssertionError(f"{script} did not parse its arguments")


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_option_has_help_with_its_default(script):
    parser = parser_of(script)
    text = parser.format_help()  # also: no stray '%' in help strings
    missing, no_default = [], []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        if not action.help:
            missing.append(action.option_strings[0])
        elif action.default not in (None, False, argparse.SUPPRESS) and action.nargs != 0 and \
                "default" not in parser._get_formatter()._expand_help(action).lower():
            no_default.append(action.option_strings[0])
    assert not missing, f"{script}: options without help: {missing}"
    assert not no_default, f"{script}: help does not state the default: {no_default}"
    assert ("--traceback" in text) == (script not in WITHOUT_TRACEBACK), script
