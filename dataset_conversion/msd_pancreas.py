"""MSD Task07_Pancreas -> nnU-Net raw Dataset604_Pancreas (default id 604, name "Pancreas").

Source: `Task07_Pancreas/imagesTr/pancreas_NNN.nii.gz` + `Task07_Pancreas/labelsTr/pancreas_NNN.nii.gz` (pass the
Task07_Pancreas folder or its parent; `._*` files are ignored, imagesTs/ is not converted). Labels kept as they
are: 0 background, 1 pancreas, 2 tumour (cancer). Case ids keep the MSD names (pancreas_...). CT, UniSeg target
spacing [3, 1.5, 1.5]. 281 training / 139 test volumes; UniSeg task 3 (prefix `panc`). FLARE22's labelled images
overlap this task: do not add both. Shared logic and quirks: see msd.py.
"""
from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.msd import MSDTask, convert_msd, msd_main, reject_options

TASK = MSDTask(folder="Task07_Pancreas", prefix="pancreas", default_id=604, name="Pancreas",
               labels={"background": 0, "pancreas": 1, "tumour": 2},
               description="Abdominal CT with segmentations of the pancreas and pancreatic tumours.")
DEFAULT_ID = TASK.default_id


def convert_pancreas(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                     **options) -> str:
    reject_options(options)
    return convert_msd(TASK, source, dataset_id, num_processes, overwrite)


@console_command
def main(argv=None) -> None:
    msd_main(TASK, convert_pancreas, argv)


if __name__ == "__main__":
    main()
