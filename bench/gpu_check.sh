#!/bin/bash
# The GPU-path check on a lent GPU machine that has torch and transformers but no dibs
# dependencies: pure-Python wheels (pydantic, deepspeed, hjson, ...) travel in .whl/, prebuilt task splits
# in .bench-data/ (no reasoning-gym there). Runs tests/gpu, then times the demo's RL steps on the GPU.
set -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "${WHL_DIR:-.whl}"/*.whl || exit 1
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/dibs
export PYTHONPATH=/tmp/site:/tmp/pkg DIBS_TASK_PKL=.bench-data/task-seed0.pkl TOKENIZERS_PARALLELISM=false \
  PYTHONWARNINGS=ignore DS_BUILD_OPS=0 PYTHONUNBUFFERED=1
python3 -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)"
timeout 240 python3 -m pytest -q -m gpu -s -p no:cacheprovider tests/gpu 2>&1 | grep -v "Writing model\|Loading weights"
timeout "${DEMO_BUDGET:-150}" python3 - <<'PY'
import pickle, time, torch
from dibs.platform.core import metrics as M
from dibs.platform.core.config import load_config
from dibs.platform.runtime.loop import train
from dibs.platform.runtime.recording import MemoryRecorder, NullProgress
steps = 30
cfg = load_config("experiments/demo.yaml", ["model.cache_dir=/tmp/demo/models", "runtime.device=cuda",
                  f"train.steps={steps}", f"eval.every={steps}", "eval.k=1"])
rec = MemoryRecorder()
torch.cuda.reset_peak_memory_stats()
t = time.perf_counter()
s = train(cfg, rec, NullProgress(), checkpoint_dir="/tmp/demo/ckpt", data=pickle.load(open("/tmp/pkg/dibs/.bench-data/task-seed0.pkl", "rb")))
step = [rec.at(i, M.TIME_STEP)[0] for i in range(2, steps + 1)]
print(f"demo on cuda: {steps} RL steps, mean step {sum(step) / len(step):.3f} s (steps 2..{steps}), "
      f"generate {sum(rec.at(i, M.TIME_GENERATE)[0] for i in range(2, steps + 1)) / len(step):.3f} s, "
      f"update {sum(rec.at(i, M.TIME_UPDATE)[0] for i in range(2, steps + 1)) / len(step):.3f} s, "
      f"sync {sum(rec.at(i, M.TIME_SYNC)[0] for i in range(2, steps + 1)) / len(step):.4f} s; "
      f"warm start {rec.at(0, M.WARM_START_SECONDS)[0]:.1f} s; total {time.perf_counter() - t:.1f} s; "
      f"peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB; "
      f"eval/accuracy {s['step0'][M.EVAL_ACCURACY]:.3f} -> {s['final'][M.EVAL_ACCURACY]:.3f}")
PY
