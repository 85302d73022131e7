"""MSD Task09_Spleen -> nnU-Net raw Dataset607_Spleen (default id 607, name "Spleen").

Source: `Task09_Spleen/imagesTr/spleen_N.nii.gz` + `Task09_Spleen/labelsTr/spleen_N.nii.gz` (pass the Task09_Spleen
folder or its parent; `._*` files are ignored, imagesTs/ is not converted). Labels kept as they are: 0 background,
1 spleen. Case ids keep the MSD names (spleen_...). CT, UniSeg target spacing [3, 1.5, 1.5]. 41 training / 20 test
volumes; UniSeg task 6 (prefix `sple`). Shared logic and quirks: see msd.py.
"""
from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.msd import MSDTask, convert_msd, msd_main, reject_options

TASK = MSDTask(folder="Task09_Spleen", prefix="spleen", default_id=607, name="Spleen",
               labels={"background": 0, "spleen": 1},
               description="Abdominal CT with segmentations of the spleen.")
DEFAULT_ID = TASK.default_id


def convert_spleen(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                   **options) -> str:
    reject_options(options)
    return convert_msd(TASK, source, dataset_id, num_processes, overwrite)


@console_command
def main(argv=None) -> None:
    msd_main(TASK, convert_spleen, argv)


if __name__ == "__main__":
    main()
