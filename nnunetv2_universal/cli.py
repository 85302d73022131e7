"""Small console helpers: the trainer folder for nnUNet_extTrainer, and how every console script reports errors."""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from typing import Optional

TRAINER_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunet_trainers")


def print_trainer_folder(argv=None) -> None:
    """Print the folder to put in nnUNet_extTrainer: export nnUNet_extTrainer=$(nnUNetv2_universal_trainer_folder)."""
    command_parser("Print nnUNet_extTrainer with the plugin's trainer folder appended (what you had is kept), so that "
                   "nnUNetv2_train and nnUNetv2_predict find UniSegTrainer & co.: "
                   "export nnUNet_extTrainer=$(nnUNetv2_universal_trainer_folder)", traceback=False).parse_args(argv)
    current = os.environ.get("nnUNet_extTrainer", "")
    print(os.pathsep.join([p for p in current.split(os.pathsep) if p and p != TRAINER_FOLDER] + [TRAINER_FOLDER]))


def ensure_trainer_folder_on_path() -> None:
    """Make our trainers findable in this process: append our folder, keep whatever the user set."""
    current = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if TRAINER_FOLDER not in current:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join(current + [TRAINER_FOLDER])


TRACEBACK_ENV = "nnUNet_universal_traceback"
# What a person can act on: bad paths, names, layouts, existing outputs (ConversionError is a RuntimeError,
# RegistryError and PredictionInputError are ValueErrors, UnknownTaskError a KeyError).
EXPECTED_ERRORS = (ValueError, KeyError, OSError, RuntimeError)


class _HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already names one (flags and None say nothing)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.default not in (None, False, argparse.SUPPRESS) and "default" not in text.lower()
                and action.option_strings and action.nargs != 0):
            text += " (default: %(default)s)"
        return text


def command_parser(description: str, traceback: bool = True, **kwargs) -> argparse.ArgumentParser:
    """The argument parser of every console script: defaults in the help, and (`traceback`) the --traceback switch
    that `console_command` handles (listed here so that --help shows it)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=_HelpWithDefaults, **kwargs)
    if traceback:
        parser.add_argument("--traceback", action="store_true",
                            help="on an error, show Python's traceback instead of one line (also: "
                                 f"{TRACEBACK_ENV}=1)")
    return parser


def one_line(error: BaseException) -> str:
    """An expected error's message on one line (a KeyError's without the quotes repr adds)."""
    message = str(error.args[0] if isinstance(error, KeyError) and error.args else error)
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _traceback_requested() -> bool:
    return os.environ.get(TRACEBACK_ENV, "").lower() in ("1", "true", "t", "yes")


@contextlib.contextmanager
def stock_command_errors(output_flag: Optional[str] = None):
    """Where plugin code runs inside a stock nnU-Net console script (nnUNetv2_train building our trainer, the
    stock-predict hook), an expected error ends it like our own scripts: one line, exit status 2, and the empty
    output folder the script made before us (named by `output_flag` on its command line) removed. Elsewhere (tests,
    Python callers, nnUNet_universal_traceback=1) the error propagates."""
    try:
        yield
    except EXPECTED_ERRORS as e:
        script = os.path.basename(sys.argv[0]) if sys.argv else ""
        if not script.startswith("nnUNetv2_") or script.startswith("nnUNetv2_universal") or _traceback_requested():
            raise
        if output_flag and output_flag in sys.argv[:-1]:
            folder = sys.argv[sys.argv.index(output_flag) + 1]
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
        print(f"{script}: {one_line(e)} ({TRACEBACK_ENV}=1 shows where)", file=sys.stderr)
        raise SystemExit(2) from None


def console_command(main):
    """Wrap a console script's main(argv). Run as a command (argv None), an expected error prints one line
    `<script>: <message>` on stderr and exits with status 2; `--traceback` (removed from argv) or
    nnUNet_universal_traceback=1 re-raises it instead. Called from Python with an argv list, errors propagate."""
    @functools.wraps(main)
    def run(argv=None):
        args = list(sys.argv[1:] if argv is None else argv)
        show = argv is not None or _traceback_requested()
        if "--traceback" in args:
            args.remove("--traceback")
            show = True
        try:
            return main(args)
        except EXPECTED_ERRORS as e:
            if show:
                raise
            print(f"{os.path.basename(sys.argv[0])}: {one_line(e)} (--traceback shows where)", file=sys.stderr)
            raise SystemExit(2) from None
    return run
