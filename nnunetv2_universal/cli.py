"""Small console helpers: the trainer folder for nnUNet_extTrainer, and how every console script reports errors."""
from __future__ import annotations

import functools
import os
import sys

TRAINER_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunet_trainers")


def print_trainer_folder() -> None:
    """Print the folder to put in nnUNet_extTrainer: export nnUNet_extTrainer=$(nnUNetv2_universal_trainer_folder)."""
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


def console_command(main):
    """Wrap a console script's main(argv). Run as a command (argv None), an expected error prints one line
    `<script>: <message>` on stderr and exits with status 2; `--traceback` (removed from argv) or
    nnUNet_universal_traceback=1 re-raises it instead. Called from Python with an argv list, errors propagate."""
    @functools.wraps(main)
    def run(argv=None):
        args = list(sys.argv[1:] if argv is None else argv)
        show = argv is not None or os.environ.get(TRACEBACK_ENV, "").lower() in ("1", "true", "t", "yes")
        if "--traceback" in args:
            args.remove("--traceback")
            show = True
        try:
            return main(args)
        except EXPECTED_ERRORS as e:
            if show:
                raise
            message = str(e.args[0] if isinstance(e, KeyError) and e.args else e)
            message = " ".join(line.strip() for line in message.splitlines() if line.strip())  # one line
            print(f"{os.path.basename(sys.argv[0])}: {message} (--traceback shows where)", file=sys.stderr)
            raise SystemExit(2) from None
    return run
