"""MSD Task10_Colon -> nnU-Net raw Dataset605_Colon (default id 605, name "Colon").

Source: `Task10_Colon/imagesTr/colon_NNN.nii.gz` + `Task10_Colon/labelsTr/colon_NNN.nii.gz` (pass the Task10_Colon
folder or its parent; `._*` files are ignored, imagesTs/ is not converted). Labels kept as they are: 0 background,
1 colon cancer primaries. Case ids keep the MSD names (colon_...). CT, UniSeg target spacing [3, 1.5, 1.5]. 126
training / 64 test volumes; UniSeg task 4 (prefix `colo`). Shared logic and quirks: see msd.py.
"""
from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.msd import MSDTask, convert_msd, msd_main, reject_options

TASK = MSDTask(folder="Task10_Colon", prefix="colon", default_id=605, name="Colon",
               labels={"background": 0, "colon_cancer": 1},
               description="Abdominal CT with segmentations of primary colon cancer.")
DEFAULT_ID = TASK.default_id


def convert_colon(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                  **options) -> str:
    reject_options(options)
    return convert_msd(TASK, source, dataset_id, num_processes, overwrite)


@console_command
def main(argv=None) -> None:
    msd_main(TASK, convert_colon, argv)


if __name__ == "__main__":
    main()
