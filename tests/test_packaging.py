"""Every console script declared in pyproject.toml is installed and resolves to a callable; every sub-package of
the source tree is listed in the packages."""
from __future__ import annotations

import importlib
import os
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYPROJECT = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))


def test_console_scripts_resolve_and_are_installed():
    scripts = PYPROJECT["project"]["scripts"]
    assert "nnUNetv2_universal_build_collection" in scripts and len(scripts) >= 20
    for name, target in scripts.items():
        module, attr = target.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), name
        assert os.path.isfile(os.path.join(os.path.dirname(sys.executable), name)), f"{name} is not installed"


def test_all_subpackages_are_packaged():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    for folder, _, files in os.walk(os.path.join(ROOT, "nnunetv2_universal")):
        if "__init__.py" in files:
            assert os.path.relpath(folder, ROOT).replace(os.sep, ".") in listed, folder
    assert "nnunetv2_universal.dataset_conversion" in listed


def test_every_trainer_class_is_visible_to_nnunet_trainer_search():
    """nnU-Net finds -tr names only in nnUNet_extTrainer (nnunetv2_universal/nnunet_trainers): every public
    nnUNetTrainer subclass of the plugin must be re-exported there."""
    import importlib
    import inspect
    import pkgutil

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    import nnunetv2_universal.training as training
    from nnunetv2_universal.nnunet_trainers import nnunetv2_universal_uniseg as exported
    defined = set()
    for module in pkgutil.walk_packages(training.__path__, "nnunetv2_universal.training."):
        for name, obj in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(obj, nnUNetTrainer) and obj.__module__ == module.name and not name.startswith("_"):
                defined.add(name)
    assert defined and sorted(defined - set(vars(exported))) == []
