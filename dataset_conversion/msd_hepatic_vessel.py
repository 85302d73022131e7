"""MSD Task08_HepaticVessel -> nnU-Net raw Dataset603_HepaticVessel (default id 603, name "HepaticVessel").

Source: `Task08_HepaticVessel/imagesTr/hepaticvessel_NNN.nii.gz` +
`Task08_HepaticVessel/labelsTr/hepaticvessel_NNN.nii.gz` (pass the Task08_HepaticVessel folder or its parent; `._*`
files are ignored, imagesTs/ is not converted). Labels kept as they are: 0 background, 1 vessel, 2 tumour. Case ids
keep the MSD names (hepaticvessel_...). CT, UniSeg target spacing [3, 1.5, 1.5]. 303 training / 140 test volumes;
UniSeg task 2 (prefix `hepa`). Shared logic and quirks: see msd.py.
"""
from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.msd import MSDTask, convert_msd, msd_main, reject_options

TASK = MSDTask(folder="Task08_HepaticVessel", prefix="hepaticvessel", default_id=603, name="HepaticVessel",
               labels={"background": 0, "vessel": 1, "tumour": 2},
               description="Abdominal CT with segmentations of the hepatic vessels and liver tumours.")
DEFAULT_ID = TASK.default_id


def convert_hepatic_vessel(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                           **options) -> str:
    reject_options(options)
    return convert_msd(TASK, source, dataset_id, num_processes, overwrite)


@console_command
def main(argv=None) -> None:
    msd_main(TASK, convert_hepatic_vessel, argv)


if __name__ == "__main__":
    main()
