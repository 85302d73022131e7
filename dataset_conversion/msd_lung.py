"""MSD Task06_Lung -> nnU-Net raw Dataset606_Lung (default id 606, name "Lung").

Source: `Task06_Lung/imagesTr/lung_NNN.nii.gz` + `Task06_Lung/labelsTr/lung_NNN.nii.gz` (pass the Task06_Lung
folder or its parent; `._*` files are ignored, imagesTs/ is not converted). Labels kept as they are: 0 background,
1 lung cancer. Case ids keep the MSD names (lung_...). CT, UniSeg target spacing [3, 1.5, 1.5]. 63 training / 32
test volumes; UniSeg task 5 (prefix `lung`). Shared logic and quirks: see msd.py.
"""
from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.msd import MSDTask, convert_msd, msd_main, reject_options

TASK = MSDTask(folder="Task06_Lung", prefix="lung", default_id=606, name="Lung",
               labels={"background": 0, "lung_cancer": 1},
               description="Chest CT with segmentations of lung tumours.")
DEFAULT_ID = TASK.default_id


def convert_lung(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                 **options) -> str:
    reject_options(options)
    return convert_msd(TASK, source, dataset_id, num_processes, overwrite)


@console_command
def main(argv=None) -> None:
    msd_main(TASK, convert_lung, argv)


if __name__ == "__main__":
    main()
