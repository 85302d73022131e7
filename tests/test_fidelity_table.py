"""docs/explanation/fidelity.md matches the code: every trainer, command-line option and setting named in a
"switch" column exists, and every test the tables cite."""
from __future__ import annotations

import glob
import os
import re

import pytest

from test_command_help import ROOT, SCRIPTS, parser_of

FIDELITY = os.path.join(ROOT, "docs", "explanation", "fidelity.md")


def switch_names() -> list:
    """Every `backticked` name in a table's "switch" column."""
    names, column = [], None
    with open(FIDELITY, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("|"):
                column = None
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if column is None:
                column = cells.index("switch") if "switch" in cells else -1
            elif column >= 0 and not set(cells[0]) <= set("-: "):
                names += re.findall(r"`([^`]+)`", cells[column])
    return names


def all_options() -> set:
    return {option for script in SCRIPTS for action in parser_of(script)._actions for option in action.option_strings}


def package_source() -> str:
    files = glob.glob(os.path.join(ROOT, "nnunetv2_universal", "**", "*.py"), recursive=True) + \
        glob.glob(os.path.join(ROOT, "dataset_conversion", "*.py"))
    return "\n".join(open(f, encoding="utf-8").read() for f in files)


def test_the_switch_columns_name_only_what_exists():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunetv2_universal.nnunet_trainers import nnunetv2_universal_uniseg as trainers
    names = switch_names()
    assert len(names) > 40  # the tables were found
    options, source = all_options(), package_source()
    problems = []
    for name in names:
        for word in name.replace("=", " ").split():
            if re.fullmatch(r"[A-Z]\w*Trainer\w*", word):
                found = getattr(trainers, word, None)
                if not (isinstance(found, type) and issubclass(found, nnUNetTrainer)):
                    problems.append(f"{word}: no such trainer")
            elif word.startswith("nnUNetv2_"):
                if word not in SCRIPTS:
                    problems.append(f"{word}: no such console script")
            elif word.startswith("test_"):
                continue  # test names: test_every_test_named_exists
            elif word.startswith("-"):
                if word not in options:
                    problems.append(f"{word}: no console script has this option")
            elif re.fullmatch(r"[A-Za-z_]\w*", word) and word not in source:
                problems.append(f"{word}: not in the code")
    assert not problems, problems


def test_every_test_named_exists():
    with open(FIDELITY, encoding="utf-8") as f:
        named = set(re.findall(r"`(test_\w+)", f.read()))
    tests = "\n".join(open(f, encoding="utf-8").read() for f in glob.glob(os.path.join(ROOT, "tests", "*.py")))
    defined = set(re.findall(r"^def (test_\w+)", tests, flags=re.M)) | \
        {os.path.splitext(os.path.basename(f))[0] for f in glob.glob(os.path.join(ROOT, "tests", "test_*.py"))}
    assert len(named) > 20 and named <= defined, sorted(named - defined)


@pytest.mark.parametrize("word", ["M4oESwinTrainerNoGate", "--uniform_tiles", "ct_clip_zscore"])
def test_the_check_sees_the_new_switches(word):
    assert any(word in name for name in switch_names())
