"""One progress bar per case across every tile of every task group, with tqdm's estimate of the remaining time.

nnU-Net shows one bar per sliding-window call; with --all-tasks a case runs one call per group of tasks that share
preprocessing, and on a CPU a tile of the paper's network takes tens of seconds, so a person wants the case's
total up front and a running estimate. The predictor counts tiles (each with its mirrorings and every task of the
group) on the case's bar."""
from __future__ import annotations

import sys
import time
from typing import Optional

from tqdm import tqdm


def tile_count(predictor, image_shape) -> int:
    """Sliding-window tiles nnU-Net's predictor runs on a preprocessed image of `image_shape` (spatial)."""
    patch = list(predictor.configuration_manager.patch_size)
    shape, k = [int(s) for s in image_shape], len(patch)  # a 2D patch runs over the slices of a 3D image
    padded = shape[:-k] + [max(s, p) for s, p in zip(shape[-k:], patch)]  # nnU-Net pads small images to the patch
    return len(predictor._internal_get_sliding_window_slicers(tuple(padded)))


def mirror_passes(predictor) -> int:
    """Network passes per tile: 1, or 2^axes with mirroring."""
    axes = predictor.allowed_mirroring_axes if predictor.use_mirroring else None
    return 2 ** len(axes) if axes else 1


class CaseProgress:
    """A case's bar (`total` tiles); after the first tile, one line with the expected time of the case."""

    def __init__(self, name: str, total: int, passes_per_tile: int, enabled: bool = True):
        self.name, self.total, self.passes = name, total, passes_per_tile
        self.bar = tqdm(total=total, desc=name, unit="tile", disable=not enabled, file=sys.stdout)
        self.started, self.done, self.enabled = time.perf_counter(), 0, enabled

    def tile_done(self) -> None:
        self.done += 1
        self.bar.update(1)
        if self.done == 1 and self.total > 1 and self.enabled:
            seconds = time.perf_counter() - self.started
            self.bar.write(f"{self.name}: first tile {seconds:.1f} s ({self.passes} network pass(es)); expected for "
                           f"the case: about {_duration(seconds * self.total)}")

    def close(self) -> None:
        self.bar.close()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def announce(name: str, groups: int, tiles: int, passes: int, tasks: int, write=print,
             seconds_per_pass: Optional[float] = None) -> None:
    """Before a case starts: what it costs (tiles x mirrorings, tasks sharing each pass)."""
    estimate = f", about {_duration(seconds_per_pass * tiles * passes)}" if seconds_per_pass else ""
    write(f"{name}: {tiles} tile(s) in {groups} preprocessing group(s) x {passes} mirroring pass(es) = "
          f"{tiles * passes} network passes for {tasks} task(s) (the encoder runs once per pass){estimate}")
