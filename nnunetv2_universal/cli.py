"""Small console helpers."""
from __future__ import annotations

import os

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
