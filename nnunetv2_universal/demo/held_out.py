"""Scoring a collection trainer's network on held-out cases whose structure maps (structuresTs/) show every
structure the images contain (the synthetic demo collection, or the real-CT benchmark's): cross-activation (how
much of another task's structure a task labels) and own Dice, during training (cheap, preprocessed space) and
after it (nnU-Net's prediction path)."""
from __future__ import annotations

import os

import numpy as np
import torch

from nnunetv2_universal.demo.partial_labels import cross_activation

PER_EPOCH_CASES = 2  # held-out cases per task scored after every epoch (all of them at the end)


def mask_dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty."""
    denom = predicted.sum() + truth.sum()
    return 1.0 if denom == 0 else float(2.0 * (predicted & truth).sum() / denom)


def _dice(pred: np.ndarray, gt: np.ndarray, labels) -> float:
    return float(np.mean([mask_dice(pred == v, gt == v) for v in labels]))


class HeldOut:
    """Held-out cases of every task, with their structure maps, and scoring of a trainer's network on them.
    `tasks`: the PartialLabelTask of every member (default: the synthetic demo's), member ids from
    `first_member_id` on in that order; `members` maps task names to member dataset names instead."""

    def __init__(self, trainer, first_member_id: int = 501, tasks=None, members=None, per_epoch_cases=None):
        from nnunetv2.paths import nnUNet_raw
        from nnunetv2_universal.inference.predictor import UniversalPredictor
        if tasks is None:
            from nnunetv2_universal.demo.synthetic import SYNTHETIC_TASKS as tasks
        self.trainer = trainer
        self.synthetic = {t.name: t for t in tasks}
        self.members = members or {t.name: f"Dataset{first_member_id + i:03d}_{t.name}" for i, t in enumerate(tasks)}
        # which held-out cases the per-epoch curve scores (default: all; the first PER_EPOCH_CASES per task)
        self.per_epoch_cases = per_epoch_cases or (lambda case: True)
        self.raw = nnUNet_raw
        self.predictor = UniversalPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                            perform_everything_on_device=False, device=torch.device("cpu"),
                                            verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        self.predictor.manual_initialization(trainer._plain_network(), trainer.plans_manager,
                                             trainer.configuration_manager, None, trainer.dataset_json,
                                             type(trainer).__name__, None)
        registry = self.predictor.registry
        groups = {}
        for i in range(len(registry)):
            groups.setdefault(self.predictor.view(i).preprocessing_signature, []).append(i)
        # groups of tasks that see the same images: where the condition alone decides
        self.shared = [g for g in groups.values() if len(g) > 1]
        self.cache = {}

    def cases(self, task: str):
        folder = os.path.join(self.raw, self.members[task])
        for f in sorted(os.listdir(os.path.join(folder, "labelsTs"))):
            case = f[:-len(".nii.gz")]
            n = len(self.synthetic[task].channels)
            yield case, [os.path.join(folder, "imagesTs", f"{case}_{c:04d}.nii.gz") for c in range(n)], \
                os.path.join(folder, "structuresTs", f)

    def _preprocessed(self, view, images, structures):
        key = (view.index, structures)
        if key not in self.cache:
            pre = view.configuration_manager.preprocessor_class(verbose=False)
            data, seg, _ = pre.run_case(images, structures, view.plans_manager, view.configuration_manager,
                                        view.dataset_json)
            self.cache[key] = (data, seg[0])
        return self.cache[key]

    def per_epoch(self) -> dict:
        """Cross-activation and own Dice of the tasks in shared groups, in preprocessed space."""
        result = {}
        self._eval_mode(True)
        try:
            for group in self.shared:
                views = [self.predictor.view(t) for t in group]
                for member in views:
                    chosen = [c for c in self.cases(member.spec.name) if self.per_epoch_cases(c[0])]
                    for case, images, structures in chosen[:PER_EPOCH_CASES]:
                        data, seg = self._preprocessed(member, images, structures)
                        logits = self._tiled_logits(data, views)
                        start = 0
                        for v in views:
                            pred = logits[start:start + v.spec.num_classes].argmax(0).numpy()
                            start += v.spec.num_classes
                            synth = self.synthetic[v.spec.name]
                            entry = result.setdefault(v.spec.name, {"cross": [], "dice": []})
                            cross = _cross(synth, pred, seg)
                            if cross is not None:
                                entry["cross"].append(cross)
                            if v.index == member.index:
                                entry["dice"].append(_dice(pred, synth.label_map(seg),
                                                           list(v.spec.foreground_labels.values())))
        finally:
            self._eval_mode(False)
        return {t: {"cross_activation": float(np.mean(e["cross"])), "own_dice": float(np.mean(e["dice"]))}
                for t, e in result.items()}

    @torch.no_grad()
    def _tiled_logits(self, data: np.ndarray, views) -> torch.Tensor:
        """Logits of each view's task (concatenated, cut to its classes): non-overlapping tiles in one batch, one
        encoder pass, tiles averaged. A cheap stand-in for nnU-Net's sliding window, for the per-epoch curve."""
        from acvl_utils.cropping_and_padding.padding import pad_nd_image
        padded, revert = pad_nd_image(torch.from_numpy(data), self.predictor.configuration_manager.patch_size,
                                      "constant", {"value": 0}, True, None)
        step, self.predictor.tile_step_size = self.predictor.tile_step_size, 1.0  # non-overlapping tiles
        slicers = self.predictor._internal_get_sliding_window_slicers(padded.shape[1:])
        self.predictor.tile_step_size = step
        tiles = torch.stack([padded[s] for s in slicers])
        network = self.trainer._plain_network()
        outputs = network.forward_tasks(tiles, [v.condition for v in views]) if hasattr(network, "forward_tasks") \
            else [network(tiles, v.condition) for v in views]
        logits = torch.cat([o[:, :v.spec.num_classes] for o, v in zip(outputs, views)], 1)
        total = torch.zeros((logits.shape[1], *padded.shape[1:]))
        count = torch.zeros(padded.shape[1:])
        for s, tile in zip(slicers, logits):
            total[(slice(None), *s[1:])] += tile.float()
            count[tuple(s[1:])] += 1
        return (total / count)[(slice(None), *revert[1:])]

    def _eval_mode(self, on: bool):
        self.trainer.set_deep_supervision_enabled(not on)
        (self.trainer.network.eval if on else self.trainer.network.train)()

    def final(self, workdir: str) -> dict:
        """Every task's held-out cases from the raw files, --task and --all-tasks, written as the predictor writes
        them (the input's own geometry) and scored there; per task the means and every case's values."""
        import SimpleITK as sitk
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
        from nnunetv2_universal.inference.merge import GlobalLabels
        registry = self.predictor.registry
        labels = GlobalLabels(registry)
        read = lambda p: sitk.GetArrayFromImage(sitk.ReadImage(p))  # noqa: E731
        self._eval_mode(True)
        # predict_all_tasks goes through nnU-Net's per-fold loop: one "fold", the current weights
        self.predictor.list_of_parameters = [{k: v.clone() for k, v in self.predictor.network.state_dict().items()}]
        out = {}
        try:
            for t, name in enumerate(registry.names):
                if name not in self.synthetic:
                    continue
                synth = self.synthetic[name]
                cases = {}
                for case, images, structures in self.cases(name):
                    view = self.predictor.select_task(t)
                    pre = view.configuration_manager.preprocessor_class(verbose=False)
                    data, _, props = pre.run_case(images, None, view.plans_manager, view.configuration_manager,
                                                  view.dataset_json)
                    logits = self.predictor.predict_sliding_window_return_logits(torch.from_numpy(data))
                    seg = convert_predicted_logits_to_segmentation_with_correct_shape(
                        logits, view.plans_manager, view.configuration_manager, view.label_manager, props)
                    task_file = os.path.join(workdir, f"task_{name}_{case}{view.dataset_json['file_ending']}")
                    view.plans_manager.image_reader_writer_class().write_seg(seg, task_file, props)
                    pred = read(task_file)
                    struct = read(structures)
                    gt = synth.label_map(struct)
                    fg = list(view.spec.foreground_labels.values())
                    merged_file = os.path.join(workdir, f"{name}_{case}")
                    self.predictor.predict_all_tasks([images], [merged_file])
                    merged = read(merged_file + ".nii.gz")
                    local = np.zeros_like(merged)
                    for v in fg:
                        local[merged == labels.global_value(t, v)] = v
                    cases[case] = {"task_dice": _dice(pred, gt, fg), "all_tasks_dice": _dice(local, gt, fg),
                                   "cross_activation": _cross(synth, pred, struct)}
                crosses = [c["cross_activation"] for c in cases.values() if c["cross_activation"] is not None]
                out[name] = {"task_dice": float(np.mean([c["task_dice"] for c in cases.values()])),
                             "all_tasks_dice": float(np.mean([c["all_tasks_dice"] for c in cases.values()])),
                             "cross_activation": float(np.mean(crosses)) if crosses else None, "cases": cases}
            self._score_as_stored(out, workdir)
        finally:
            self._eval_mode(False)
        return out

    def _score_as_stored(self, out: dict, workdir: str) -> None:
        """Each case's --task Dice once more with reorientation off (the image fed as stored), next to the
        reoriented one: what orientation-safe prediction changes. Only where the plans record an orientation."""
        import SimpleITK as sitk
        from nnunetv2_universal.orientation import ORIENTATION_KEY, file_orientation
        stored_otherwise = {}
        for name in out:
            trained = self.predictor.view(name).plans_manager.plans.get(ORIENTATION_KEY)
            stored_otherwise[name] = [c for c in self.cases(name) if trained and file_orientation(c[1][0]) != trained]
        if not any(stored_otherwise.values()):
            return
        self.predictor.reorient, self.predictor.views = False, {}
        try:
            for t, name in enumerate(self.predictor.registry.names):
                for case, images, structures in stored_otherwise.get(name, []):
                    target = os.path.join(workdir, f"stored_{name}_{case}")
                    self.predictor.predict_all_tasks([images], [target], tasks=[name])
                    pred = sitk.GetArrayFromImage(sitk.ReadImage(target + ".nii.gz")) > 0
                    gt = self.synthetic[name].label_map(sitk.GetArrayFromImage(sitk.ReadImage(structures))) > 0
                    out[name]["cases"][case]["task_dice_as_stored"] = mask_dice(pred, gt)
        finally:
            self.predictor.reorient, self.predictor.views = True, {}


def _cross(synth, pred, structures):
    values = cross_activation(synth, pred, structures)
    return max(values.values()) if values else None
