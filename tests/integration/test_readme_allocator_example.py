"""README.md's worked allocator ("Adding an allocator"): the code block under its placeholder is run as it
stands, registers its allocator, and a smoke-sized experiment naming it trains through the normal loop
with the counts that allocator gives (prompt lengths), recorded per prompt and charged to the budget."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from dibs.platform.allocation.factory import unregister_allocator
from dibs.platform.core import metrics as M
from dibs.platform.core.config import ConfigError, load_config
from dibs.platform.runtime.loop import train
from dibs.platform.runtime.recording import MemoryRecorder, NullProgress

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = "<!-- example: allocator -->"
NAME = "longer_prompts_more"
M_PROMPTS, N, STEPS = 8, 4, 2  # experiments/smoke.yaml: 8 prompts a step, 4 rollouts each


def readme_block() -> str:
    """The ```python block right under the placeholder line."""
    text = (ROOT / "README.md").read_text()
    found = re.search(re.escape(PLACEHOLDER) + r"\n```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert found, f"README.md: no ```python block right after {PLACEHOLDER}"
    return found.group(1)


@pytest.fixture
def example():
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(readme_block(), "README.md (example: allocator)", "exec"), namespace)  # noqa: S102
    yield namespace
    unregister_allocator(NAME)


def by_length(prompts: list[str], budget: int) -> list[int]:
    """Largest-remainder split of `budget` in proportion to len(prompt), written out again by hand."""
    total = sum(len(p) for p in prompts)
    shares = [budget * len(p) / total for p in prompts]
    counts = [int(s) for s in shares]
    order = sorted(range(len(prompts)), key=lambda i: (-(shares[i] - counts[i]), i))
    for i in order[: budget - sum(counts)]:
        counts[i] += 1
    return counts


def test_the_example_splits_by_length(example):
    cfg = load_config(ROOT / "experiments/smoke.yaml", [f"allocation.allocator={NAME}"]).allocation
    allocator = example["LongerPromptsMore"](cfg)
    prompts = [SimpleNamespace(prompt="1+2="), SimpleNamespace(prompt="10+20-3=")]
    # lengths 4 and 8 of a budget of 2 x 4 = 8: shares 8/3 and 16/3 -> floors 2 and 5, the one left
    # over to the larger remainder (2/3 against 1/3).
    alloc = allocator.allocate(prompts, ctx=None)
    assert alloc.counts.tolist() == [3, 5] == by_length(["1+2=", "10+20-3="], 8)
    assert alloc.stats == {M.ALLOC_N_MIN: 3.0, M.ALLOC_N_MAX: 5.0}


def test_an_unregistered_name_is_an_error_that_lists_the_known_ones(tmp_path):
    with pytest.raises(
        ConfigError,
        match=rf"allocation.allocator: unknown allocator; known: uniform, gvm, "
        rf"gvm_reuse, dapo, gvm_oracle, reinforce_ada, greso, knapsack, variance, "
        rf"probe_trains \(got '{NAME}'\)",
    ):
        load_config(ROOT / "experiments/smoke.yaml", [f"allocation.allocator={NAME}"])


def test_a_smoke_run_trains_with_its_counts(example, tmp_path):
    cfg = load_config(
        ROOT / "experiments/smoke.yaml",
        [
            f"allocation.allocator={NAME}",
            f"model.cache_dir={tmp_path}/models",
            f"train.steps={STEPS}",
            "warm_start.steps=5",
            "eval.every=100",
            "eval.k=1",
            "task.test_size=4",
        ],
    )
    assert (cfg.train.prompts_per_step, cfg.allocation.n_per_prompt) == (M_PROMPTS, N)
    rec = MemoryRecorder()
    summary = train(cfg, rec, NullProgress(), checkpoint_dir=str(tmp_path / "ckpt"))
    uneven = False
    for step in range(1, STEPS + 1):
        rows = rec.prompts[step]
        assert len(rows) == M_PROMPTS
        counts = [r.n_alloc for r in rows]
        assert counts == by_length([r.prompt_id for r in rows], M_PROMPTS * N)
        uneven |= len(set(counts)) > 1  # not the uniform split the loop would make without it
        assert rec.at(step, M.BUDGET_ROLLOUTS)[0] == step * M_PROMPTS * N  # no probe: the budget, exactly
        assert rec.at(step, M.ALLOC_N_MAX)[0] == max(counts) and rec.at(step, M.ALLOC_N_MIN)[0] == min(counts)
    assert uneven, "every step's prompts had one length: the check could not tell the split from uniform"
    assert summary["rollouts_consumed"] == STEPS * M_PROMPTS * N
    assert json.loads((tmp_path / "ckpt" / f"step-{STEPS}" / "allocator.json").read_text()) == {}
