"""nnU-Net's background augmenters around a trainer's own data loaders (same worker counts as nnU-Net)."""
from __future__ import annotations

from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA


def wrap_in_augmenters(dl_tr, dl_val, device):
    n_proc = get_allowed_n_proc_DA()
    if n_proc == 0:
        return SingleThreadedAugmenter(dl_tr, None), SingleThreadedAugmenter(dl_val, None)
    pin = device.type == "cuda"
    return (NonDetMultiThreadedAugmenter(dl_tr, None, n_proc, max(6, n_proc // 2), None, pin, 0.002),
            NonDetMultiThreadedAugmenter(dl_val, None, max(1, n_proc // 2), max(3, n_proc // 4), None, pin, 0.002))


class NoMirroring:
    """Trainer mixin: no mirroring augmentation and no mirroring test-time augmentation (left/right structures;
    short CPU schedules, where it also makes inference 8x cheaper)."""

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None
