# `make demo` and `make test` are the two entry points; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The data: $CIFAR10_DATA if set, else the shared local copy if this machine has one,
# else nothing, and the commands download the official tarball.
DATA ?= $(or $(CIFAR10_DATA),$(abspath $(wildcard ../shared/data/cifar10-jpeg.tar.gz)))
export CIFAR10_DATA := $(DATA)
PYTEST_ARGS ?=
# Test files run in this many processes (pytest-xdist), whole files to a process so module
# and session fixtures are built once per process. CI machines have 2 cores, and most of a
# test's time is single-threaded Python and graph building (BENCHMARKS.md, "CI time").
# PYTEST_WORKERS=0 (or empty) runs them in this process, as before.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL := $(if $(filter-out 0,$(strip $(PYTEST_WORKERS))),-n $(strip $(PYTEST_WORKERS)) --dist loadfile)

.PHONY: setup test test-fast demo demo-train pi-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	touch $@

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# The main job: the packaged default model on the bundled photos and clip (made by
# `python -m cifar_edge.benchmarks.clips --out samples` from CIFAR-10 test images).
demo: setup
	$(BIN)/cifar-run samples/images --top-k 2
	$(BIN)/cifar-run --video samples/clip.mp4 --every 5

# A 46-second training run, to see cifar-train work end to end.
demo-train: setup
	$(BIN)/cifar-train --model resnet8 --epochs 3 --limit-train 5000 --out runs/demo --overwrite

# The runtime-only install and cifar-run on an emulated arm64 Pi OS (bookworm; PI_RELEASE=trixie for Python 3.13),
# compared with this machine. Needs root on an x86-64 Debian or Ubuntu host; see tools/pi-check.sh.
pi-check: setup
	bash tools/pi-check.sh

clean:
	rm -rf $(VENV) runs .pytest_cache
