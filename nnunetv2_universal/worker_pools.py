"""One worker without a process: nnU-Net's steps open a "spawn" process pool even when asked for one worker.

Fingerprinting, the dataset check, the final validation's export and the metrics each call
`multiprocessing.get_context("spawn").Pool(n)`, and listing a raw dataset's files forks a `Pool(12)`. A spawned
worker imports torch and nnU-Net again, about 8 s on a 2-core machine, to do milliseconds of work per case on small
data. With one worker (`-np 1`, nnUNet_def_n_proc=1) the same pool calls run on one thread of this process:
nnU-Net's code is unchanged, and so are its results.
"""
from __future__ import annotations

import contextlib
import multiprocessing
from multiprocessing.pool import ThreadPool
from types import ModuleType


class _OneThreadPools:
    """Stands in for the `multiprocessing` module inside nnU-Net's modules: every context's Pool is a one-thread
    pool of this process (with nnU-Net's calls: starmap_async, ready, and `_pool` workers that answer is_alive);
    anything else is the real module's."""

    def get_context(self, method=None):
        return self

    @staticmethod
    def Pool(processes=None, *args, **kwargs):
        return ThreadPool(1)

    def __getattr__(self, name):
        return getattr(multiprocessing, name)


@contextlib.contextmanager
def pools_in_process(num_processes: int, *modules: ModuleType):
    """Within the block, each module's `multiprocessing.get_context(...).Pool(...)` (or its imported `Pool`) is a
    one-thread pool of this process when num_processes <= 1; with more workers nothing changes."""
    if num_processes > 1:
        yield
        return
    one_thread = _OneThreadPools()
    saved = [(module, name, getattr(module, name)) for module in modules for name in ("multiprocessing", "Pool")
             if hasattr(module, name)]
    for module, name, _ in saved:
        setattr(module, name, one_thread if name == "multiprocessing" else one_thread.Pool)
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)
