"""The demo command: exit status 0 after a full run (every step through the real console scripts, with the quick
test trainer), 1 with the reason when a step fails."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import BIN, clean_env

pytestmark = pytest.mark.integration


def test_demo_runs_every_step_and_exits_0(tmp_path):
    env = clean_env(str(tmp_path))
    work = tmp_path / "demo"
    proc = subprocess.run([os.path.join(BIN, "nnUNetv2_universal_demo"), "-o", str(work), "--num_train", "2",
                           "-tr", "UniSegTrainer_test"], env=env, capture_output=True, encoding="utf-8",
                          errors="replace", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.load(open(work / "demo_results.json"))
    assert results["trainer"] == "UniSegTrainer_test"
    ct = results["tasks"]["SynthLiverCT"]
    assert set(ct) == {"per_class", "mean", "all_tasks_mean", "cross_activation"}
    assert 0.0 <= ct["cross_activation"] <= 1.0
    assert results["tasks"]["SynthPETCT"]["cross_activation"] is None  # no other task sees PET/CT images
    assert os.path.getsize(work / "demo_results.png") > 0
    header = next(line for line in proc.stdout.splitlines() if line.startswith("task "))
    assert header.split()[:4] == ["task", "--task", "--all", "cross"]


def test_a_failing_step_exits_1_with_the_reason(tmp_path, monkeypatch, capsys):
    from nnunetv2_universal.demo import run_demo
    calls, real_run = [], run_demo._run

    def failing_run(cmd, env, log_file):
        calls.append(cmd)
        real_run([sys.executable, "-c", "import sys; sys.exit(3)"], env, log_file)

    monkeypatch.setattr(run_demo, "_run", failing_run)
    assert run_demo.main(["-o", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert "Demo failed:" in err and "exited with status 3" in err and str(tmp_path / "w" / "demo.log") in err
    assert len(calls) == 1  # stopped at the first failing step
