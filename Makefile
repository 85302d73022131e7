# Two commands: `make demo` (the main job) and `make test`. Both build .venv first.
# torch 2.14.1 + torchvision 0.29.1 are pinned together: nnU-Net's trainer lookup imports timm/torchvision,
# and a lone CPU torch would get a torchvision that cannot import (see docs/getting-started/installation.md).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[test]' $(TORCH_PINS)
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/nnUNetv2_universal_demo

# Two workers (2 cores): tests sharing a session workspace stay in one worker (tests/conftest.py).
test: venv
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup tests

bench: venv
	$(BIN)/python benchmarks/method_overheads.py --out benchmarks/method_overheads_cpu.json
	$(BIN)/python benchmarks/loader_throughput.py --out benchmarks/loader_throughput_cpu.json
	$(BIN)/python benchmarks/loader_throughput.py --patch 64 192 192 --batch_size 2 --batches 30 \
		--out benchmarks/loader_throughput_paper_patch_cpu.json

clean:
	rm -rf $(VENV) build *.egg-info
