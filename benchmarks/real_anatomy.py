"""The real-anatomy benchmark: trainers side by side on real abdominal CT with partial labels.

    python benchmarks/real_anatomy.py --source TotalSegmentator/tests/reference_files \
        --trainers UniSegTrainerTaskHeads_cpuDemo UniSegTrainerDecoderFiLM_cpuDemo --seeds 0 1 2 \
        [--single_task] [--workdir DIR] [--parallel 2] [--out benchmarks/real_anatomy_cpu.json]

Data (written by `nnUNetv2_universal_convert_totalseg_examples`, scored as `nnunetv2_universal.demo.real_ct`): two
tasks on crops of one real patient, one labelling the liver, the other
the spleen, every image showing both; held out: another crop of that patient (a) and a second patient read from a
DICOM series and stored in another orientation (b). The source is TotalSegmentator's test folder (Apache-2.0;
`git clone --depth 1 https://github.com/wasserth/TotalSegmentator`); nothing is downloaded. With `--source` the unzipped
TotalSegmentator dataset (its meta.csv; `nnUNetv2_universal_convert_totalseg_dataset`), the tasks train on many
patients, other ones for each task, and a / b are held-out subjects of its val / test splits. Everything else (demo
schedule, cpu_demo plans, per-epoch cross-activation, final --task / --all-tasks scoring in the input's own
geometry, `--single_task`: each task alone at equal total iterations) is benchmarks/conditioning.py's.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conditioning import main  # noqa: E402

if __name__ == "__main__":
    main(["--data", "real"] + sys.argv[1:])
