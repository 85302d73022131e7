"""`nnUNetv2_universal_build_uniseg11`: the UniSeg paper's 11-task upstream collection in one command.

Members, in the paper's task order (task ids 0..10), with our converters' default dataset ids: liver 601, kidney
602, hepatic vessel 603, pancreas 604, colon 605, lung 606, spleen 607, vertebrae 608, prostate 609, brain tumour
610, whole-body tumour (PET/CT) 611. Each member keeps the paper's target spacing (pinned here whatever its own
entry says: 3x1.5x1.5 mm for the MOTS tasks and prostate, 4x2x2 VerSe, 1x1x1 BraTS, 8x4x4 AutoPET) and its
normalisation (CT window [-325, 325] on CT channels, z-score otherwise). The collection is built, planned with the
`paper` template (patch 64x192x192, batch 2, the reference network) and preprocessed, ready for
`nnUNetv2_train 620 3d_fullres 0 -tr UniSegTrainer -p UniSegPlans`.
"""
from __future__ import annotations

import os

from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from nnunetv2_universal.cli import command_parser, console_command
from nnunetv2_universal.collection.build import build_collection
from nnunetv2_universal.collection.plan_and_preprocess import plan_collection, preprocess_collection
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError, raw_root
from nnunetv2_universal.finetuning.uniseg11_tasks import PAPER_TASKS

# (what, default member id, expected input channels, paper target spacing (z, y, x)), from the one paper table
PAPER_MEMBERS = tuple((t.what, t.member_id, len(t.channels), t.spacing) for t in PAPER_TASKS)


def build_uniseg11(members=None, collection_id: int = 620, name: str = "UniSeg11", overwrite: bool = False,
                   num_processes: int = 1, preprocess: bool = True) -> str:
    members = [str(m) for m in (members or [m[1] for m in PAPER_MEMBERS])]
    if len(members) != len(PAPER_MEMBERS):
        raise ValueError(f"UniSeg-11 needs 11 members in the paper's order ({', '.join(m[0] for m in PAPER_MEMBERS)}),"
                         f" got {len(members)}")
    overrides = {}
    for member, (what, _, channels, spacing) in zip(members, PAPER_MEMBERS):
        try:
            dataset = maybe_convert_to_dataset_name(int(member) if member.isdigit() else member)
        except RuntimeError:
            raise ConversionError(f"member {member} ({what}) is not in nnUNet_raw: convert it first") from None
        found = len(load_json(join(raw_root(), dataset, "dataset.json"))["channel_names"])
        if found != channels:
            raise ConversionError(f"member {dataset} ({what}) has {found} input channel(s); UniSeg-11 expects "
                                  f"{channels} for this task")
        overrides[dataset] = {"spacing": list(spacing)}
    collection = build_collection(members, collection_id, name, overrides, overwrite)
    plans = plan_collection(collection, "paper", "3d_fullres", num_processes)
    if preprocess:
        preprocess_collection(collection, plans["plans_name"], "3d_fullres", num_processes)
    return collection


@console_command
def main(argv=None) -> None:
    p = command_parser(description="Build, plan and preprocess the UniSeg paper's 11-task collection.")
    p.add_argument("-d", nargs=11, default=[str(m[1]) for m in PAPER_MEMBERS],
                   help="the 11 member datasets in the paper's task order (default 601 ... 611)")
    p.add_argument("-o", type=int, default=620, help="collection dataset id (default 620)")
    p.add_argument("-n", default="UniSeg11", help="collection name (default UniSeg11)")
    p.add_argument("-np", type=int, default=int(os.environ.get("nnUNet_def_n_proc", 1)),
                   help="worker processes for conversion and preprocessing (nnUNet_def_n_proc, else 1)")
    p.add_argument("--overwrite", action="store_true", help="replace existing datasets with these ids")
    p.add_argument("--no_preprocess", action="store_true", help="build and plan only")
    args = p.parse_args(argv)
    collection = build_uniseg11(args.d, args.o, args.n, args.overwrite, args.np, not args.no_preprocess)
    print(f"{collection} ready: nnUNetv2_train {args.o} 3d_fullres 0 -tr UniSegTrainer -p UniSegPlans")


if __name__ == "__main__":
    main()
