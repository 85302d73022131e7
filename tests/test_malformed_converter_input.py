"""Malformed input to every converter: one image of a layout-true fake tree is damaged (unreadable bytes, NaN
voxels, a non-orthonormal direction, a channel too many or too few) and the conversion must fail with a
ConversionError naming that file, leaving nnUNet_raw without a dataset or staging folder. Documented exception:
M&Ms skips (and lists) cines with a non-orthonormal direction and converts the rest."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from fake_echo_sources import make_camus_mhd, make_camus_nifti, make_dynamic, make_pediatric
from fake_sources import damage_image, set_raw
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError
from test_convert_autopet import make_autopet
from test_convert_bad_input import make_task03
from test_convert_brats21 import make_brats
from test_convert_btcv import make_btcv
from test_convert_hermes_datasets import make_brain_structure, make_chaos, make_mnms, make_structseg
from test_convert_kits19 import make_kits
from test_convert_liver import make_lits
from test_convert_m4oe_datasets import make_amos, make_atlas23, make_flare22
from test_convert_msd import MODULES as MSD_MODULES, make_task
from test_convert_prostate import make_prostate
from test_convert_verse20 import make_verse
from test_convert_vs import make_vs
from test_real_ct import make_totalseg_dataset, make_totalseg_examples

VOLUME_DAMAGE = ("unreadable", "nan", "non_orthonormal", "channels")


def _msd(folder, cases, ds_labels):
    return lambda root: make_task(root, folder, cases, ds_labels)[0]


# (id, converter module, build(root) -> the folder passed as -i, the image to damage relative to root, damages)
CONVERTERS = [
    ("liver_msd", "liver", make_task03, "Task03_Liver/imagesTr/liver_1.nii.gz", VOLUME_DAMAGE),
    ("liver_lits", "liver", lambda r: make_lits(r) or r, "Training Batch 1/volume-1.nii", VOLUME_DAMAGE),
    *[(m, m, _msd(folder, cases, ds), f"{folder}/imagesTr/{cases[1]}.nii.gz", VOLUME_DAMAGE)
      for m, folder, cases, _, _, ds in MSD_MODULES],
    ("brats21", "brats21", lambda r: make_brats(r) or r,
     "BraTS2021_Training_Data/BraTS2021_00001/BraTS2021_00001_t1ce.nii.gz", VOLUME_DAMAGE),
    ("btcv", "btcv", make_btcv, "RawData/Training/img/img0002.nii.gz", VOLUME_DAMAGE),
    ("kits19", "kits19", make_kits, "kits19/data/case_00001/imaging.nii.gz", VOLUME_DAMAGE),
    ("multisite_prostate", "multisite_prostate", lambda r: make_prostate(r) or r, "BIDMC/Case01.nii.gz",
     VOLUME_DAMAGE),
    ("verse20", "verse20", lambda r: make_verse(r) or r,
     "dataset-01training/rawdata/sub-verse500/sub-verse500_ct.nii.gz", VOLUME_DAMAGE),
    ("vestibular_schwannoma", "vestibular_schwannoma", lambda r: make_vs(r) or r, "vs_gk_2/vs_gk_t1_refT1.nii.gz",
     VOLUME_DAMAGE),
    ("autopet", "autopet", lambda r: make_autopet(r) or r, None, VOLUME_DAMAGE),
    ("amos22", "amos22", lambda r: make_amos(Path(r)), "amos22/imagesTr/amos_0005.nii.gz", VOLUME_DAMAGE),
    ("flare22", "flare22", make_flare22, "FLARE22Train/images/FLARE22_Tr_0002_0000.nii.gz", VOLUME_DAMAGE),
    ("atlas23", "atlas23", make_atlas23, "atlas-train-dataset-1.0.1/train/imagesTr/im1.nii.gz", VOLUME_DAMAGE),
    ("structseg", "structseg", make_structseg, "Naso_GTV/2/data.nii.gz", VOLUME_DAMAGE),
    ("totalseg_examples", "totalseg_examples", lambda r: make_totalseg_examples(r)[0],
     "TotalSegmentator/tests/reference_files/example_ct_sm.nii.gz", VOLUME_DAMAGE),
    ("totalseg_dataset", "totalseg_dataset", make_totalseg_dataset, "Totalsegmentator_dataset_v201/s0000/ct.nii.gz",
     VOLUME_DAMAGE),
    ("brain_structure", "brain_structure", make_brain_structure, "train/image/dlbs_002_img.nii", VOLUME_DAMAGE),
    ("mnms", "mnms", make_mnms, "OpenDataset/Training/Labeled/D4E5F6/D4E5F6_sa.nii.gz", VOLUME_DAMAGE),
    ("chaos", "chaos", lambda r: make_chaos(r)[0],
     "CHAOS_Train_Sets/Train_Sets/MR/1/T1DUAL/DICOM_anon/InPhase/IMG-0003-4.dcm", ("unreadable",)),
    ("camus_nifti", "camus", make_camus_nifti,
     "CAMUS_public/database_nifti/patient0002/patient0002_4CH_half_sequence.nii.gz", VOLUME_DAMAGE),
    ("camus_mhd", "camus", make_camus_mhd, "camus_2019/training/patient0002/patient0002_2CH_sequence.mhd",
     VOLUME_DAMAGE),
    ("echonet_dynamic", "echonet_dynamic", make_dynamic, "EchoNet-Dynamic/Videos/0X2B.avi", ("unreadable",)),
    ("echonet_pediatric", "echonet_pediatric", make_pediatric,
     "pediatric_echo_avi/pediatric_echo_avi/A4C/Videos/CR33b-A4C2-000002.avi", ("unreadable",)),
]


def first_image(root: str) -> str:
    """autoPET: the first study's SUV volume (its folder names carry dates and free text)."""
    return sorted(str(p) for p in Path(root).rglob("SUV.nii.gz"))[0]


def expected_outcome(converter: str, how: str) -> str:
    return "skipped" if (converter, how) == ("mnms", "non_orthonormal") else "refused"


CASES = [pytest.param(c, module, build, rel, how, id=f"{c}-{how}")
         for c, module, build, rel, damages in CONVERTERS for how in damages]


@pytest.mark.parametrize("converter, module_name, build, relative, how", CASES)
def test_damaged_image_is_refused_and_nothing_is_written(tmp_path, monkeypatch, converter, module_name, build,
                                                         relative, how):
    source_root = tmp_path / "src"
    source_root.mkdir()
    source = build(str(source_root))
    path = first_image(str(source_root)) if relative is None else str(source_root / relative)
    assert os.path.isfile(path), path
    damage_image(path, how)
    raw = set_raw(monkeypatch, tmp_path)
    module = importlib.import_module(f"nnunetv2_universal.dataset_conversion.{module_name}")
    if expected_outcome(converter, how) == "skipped":
        module.main(["-i", str(source)])
        written = [f for d in os.listdir(raw) for f in os.listdir(os.path.join(raw, d, "labelsTr"))]
        assert written and not [f for f in written if "D4E5F6" in f]
        return
    with pytest.raises(ConversionError) as error:
        module.main(["-i", str(source)])
    assert os.path.basename(path) in str(error.value) or os.path.dirname(path) in str(error.value), str(error.value)
    left = os.listdir(raw) if os.path.isdir(raw) else []
    assert not left, left
