"""nnU-Net's local logger plus one pseudo-Dice curve per task and the condition sensitivity (kept in checkpoints,
drawn in progress.png)."""
from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
from batchgenerators.utilities.file_and_folder_operations import join  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402

from nnunetv2_universal.training.condition_diagnostic import CONDITION_KEY, CONDITION_PER_TASK_KEY  # noqa: E402

TASK_DICE_KEY = "task_pseudo_dice"


class TaskAwareLocalLogger(LocalLogger):
    """Logs, per epoch, a dict {task name: mean foreground pseudo-Dice} under `task_pseudo_dice`."""

    def __init__(self, task_names: Sequence[str], verbose: bool = False):
        super().__init__(verbose)
        self.task_names = list(task_names)
        self.my_fantastic_logging[TASK_DICE_KEY] = []
        self.my_fantastic_logging[CONDITION_KEY] = []
        self.my_fantastic_logging[CONDITION_PER_TASK_KEY] = []

    def load_checkpoint(self, checkpoint: dict):
        checkpoint = dict(checkpoint)
        # Checkpoints from an older logger lack these curves: fill with empty entries to keep epochs aligned.
        epochs = len(checkpoint.get("mean_fg_dice", []))
        checkpoint.setdefault(TASK_DICE_KEY, [{} for _ in range(epochs)])
        checkpoint.setdefault(CONDITION_KEY, [float("nan")] * epochs)
        checkpoint.setdefault(CONDITION_PER_TASK_KEY, [{} for _ in range(epochs)])
        super().load_checkpoint(checkpoint)

    def plot_progress_png(self, output_folder):
        log = self.my_fantastic_logging
        epoch = min(len(v) for v in log.values()) - 1
        if epoch < 0:
            return
        x = list(range(epoch + 1))
        fig, axes = plt.subplots(3, 1, figsize=(16, 24))
        ax = axes[0]
        ax.plot(x, log["train_losses"][:epoch + 1], color="b", label="loss_tr", linewidth=3)
        ax.plot(x, log["val_losses"][:epoch + 1], color="r", label="loss_val", linewidth=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(loc="upper left")
        ax2 = ax.twinx()
        ax2.plot(x, log["mean_fg_dice"][:epoch + 1], color="g", ls="dotted", label="pseudo dice (mean of tasks)",
                 linewidth=2)
        ax2.plot(x, log["ema_fg_dice"][:epoch + 1], color="g", label="pseudo dice (mov. avg.)", linewidth=3)
        for name in self.task_names:
            ax2.plot(x, [e.get(name, float("nan")) for e in log[TASK_DICE_KEY][:epoch + 1]], ls="--",
                     label=f"pseudo dice {name}", linewidth=1.5)
        if any(v == v for v in log[CONDITION_KEY][:epoch + 1]):  # not all NaN: some tasks share inputs
            ax2.plot(x, log[CONDITION_KEY][:epoch + 1], color="k", lw=3,
                     label="condition sensitivity (1 - Dice, own vs other task)")
        ax2.set_ylabel("pseudo dice / condition sensitivity")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right", fontsize="small")
        durations = [e - s for e, s in zip(log["epoch_end_timestamps"][:epoch + 1], log["epoch_start_timestamps"])]
        axes[1].plot(x, durations, color="b", label="epoch duration", linewidth=3)
        axes[1].set_ylim(0, max(durations + [1]) * 1.1)
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("time [s]")
        axes[1].legend(loc="upper left")
        axes[2].plot(x, log["lrs"][:epoch + 1], color="b", label="learning rate", linewidth=3)
        axes[2].set_xlabel("epoch")
        axes[2].set_ylabel("learning rate")
        axes[2].legend(loc="upper left")
        fig.tight_layout()
        fig.savefig(join(output_folder, "progress.png"))
        plt.close(fig)
