"""Allocators behind the Protocol (docs/method.md §2-4): uniform counts, GVM on a stub engine whose probe
rewards and gradient norms the test controls, the registry of allocators, and validation of the
allocation config."""

import functools

import numpy as np
import pytest
import torch
from transformers import Qwen2ForCausalLM

from dibs.algorithms.allocation import gvm_allocate
from dibs.platform.allocation import estimators
from dibs.platform.allocation.allocators import AllocContext, GVMAllocator, UniformAllocator
from dibs.platform.allocation.factory import (
    BUILTIN,
    build_allocator,
    register_allocator,
    unregister_allocator,
)
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig, ConfigError, ModelConfig, TaskConfig, validate_dict
from dibs.platform.core.registry import ALLOCATORS, BUILTIN_ALLOCATORS
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.rollout.base import Rollouts, SamplingSpec
from dibs.platform.tasks.base import Problem
from dibs.platform.tasks.chain_sum import ALPHABET, ChainSumTask
from dibs.platform.tasks.evaluate import score_groups

pytestmark = pytest.mark.unit

# The chain-sum task's rewards, as the loop hands them to allocators.
SCORE = functools.partial(score_groups, ChainSumTask(TaskConfig()))

PROMPTS = [Problem("1+2=", 3, 2), Problem("5-9=", -4, 2), Problem("7+7=", 14, 2), Problem("2-1=", 1, 2)]
# Probe outcome per prompt (4 samples each): accepted?, and the gradient norm each accepted sample has.
ACCEPTED = [[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 1, 0]]
NORMS = [[1.0, 9.0, 3.0, 9.0], [9.0] * 4, [2.0] * 4, [9.0, 9.0, 4.0, 9.0]]  # 9.0: rejected, never used


class StubEngine:
    """Returns the scripted probe: a correct, stopped answer for accepted samples, a wrong one otherwise.
    Sample b carries its index in sequences[b, 0], so the stubbed norm function can look it up."""

    def __init__(self, accepted):
        self.accepted, self.calls = accepted, []

    def generate(self, prompts, counts, spec, *, seed):
        self.calls.append((prompts, counts, spec, seed))
        gids = [i for i, c in enumerate(counts) for _ in range(c)]
        j = [k for c in counts for k in range(c)]
        answers = {p.prompt: p.answer for p in PROMPTS}
        texts = [
            f"\\boxed{{{answers[prompts[i]] + (0 if self.accepted[i][k] else 1)}}}"
            for i, k in zip(gids, j, strict=True)
        ]
        B = len(texts)
        resp = torch.zeros(B, 5)
        resp[:, 2:] = 1.0  # 3 response tokens each
        return Rollouts(
            torch.arange(B)[:, None].repeat(1, 6),
            torch.ones(B, 6, dtype=torch.long),
            resp,
            torch.zeros(B, 5),
            torch.tensor(gids),
            texts,
            torch.ones(B, dtype=torch.bool),
        )


@pytest.fixture(scope="module")
def policy():
    tok = train_tokenizer(ALPHABET)
    cfg = ModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32)
    return Qwen2ForCausalLM(qwen2_config(cfg, tok))


@pytest.fixture
def scripted_norms(monkeypatch):
    """per_sample_grad_norms replaced by the NORMS table; returns the batch sizes it was asked for."""
    flat = torch.tensor([n for row in NORMS for n in row])
    sizes = []

    def fake(model, rollouts, **kwargs):
        sizes.append(len(rollouts.texts))
        return flat[rollouts.sequences[:, 0]]

    monkeypatch.setattr(estimators, "per_sample_grad_norms", fake)
    return sizes


def ctx(engine, policy, seed=7):
    return AllocContext(engine, policy, SamplingSpec(temperature=0.9, max_new_tokens=5), seed, score=SCORE)


def test_uniform_gives_n_each_and_never_probes():
    alloc = build_allocator(AllocationConfig(n_per_prompt=3)).allocate(PROMPTS, ctx(None, None))
    assert alloc.counts.tolist() == [3, 3, 3, 3] and alloc.counts.dtype == np.int64
    assert (alloc.probe_rollouts, alloc.probe_tokens, alloc.stats) == (0, 0, {})


def test_build_allocator_matches_the_name():
    assert isinstance(build_allocator(AllocationConfig()), UniformAllocator)
    assert isinstance(build_allocator(AllocationConfig(allocator="gvm")), GVMAllocator)
    assert sorted(BUILTIN) == sorted(BUILTIN_ALLOCATORS)  # every name the config accepts builds something


def test_a_registered_allocator_validates_and_builds_then_goes():
    made = []

    def factory(cfg):
        made.append(cfg.n_per_prompt)
        return UniformAllocator(cfg.n_per_prompt)

    register_allocator("fixed_for_test", factory)
    try:
        cfg = validate_dict({"allocation": {"allocator": "fixed_for_test", "n_per_prompt": 3}}).allocation
        assert build_allocator(cfg).allocate(PROMPTS, ctx(None, None)).counts.tolist() == [3] * 4
        assert made == [3] and ALLOCATORS.names() == (*BUILTIN_ALLOCATORS, "fixed_for_test")
    finally:
        unregister_allocator("fixed_for_test")
    with pytest.raises(
        ConfigError,
        match="allocation.allocator: unknown allocator; known: uniform, gvm, gvm_reuse, "
        "dapo, gvm_oracle, reinforce_ada, greso, knapsack, variance, probe_trains \\(got 'fixed_for_test'\\)",
    ):
        validate_dict({"allocation": {"allocator": "fixed_for_test"}})
    # A config validated where the name was registered, built where it is not (another process).
    with pytest.raises(
        ValueError,
        match="unknown allocator 'fixed_for_test'; known: uniform, gvm, gvm_reuse, dapo, "
        "gvm_oracle, reinforce_ada, greso, knapsack, variance, probe_trains .*runtime.executor: inline",
    ):
        build_allocator(cfg)


def test_register_allocator_refuses_bad_entries():
    with pytest.raises(ValueError, match="register allocator: 'gvm' is built in; pick another name"):
        register_allocator("gvm", lambda cfg: UniformAllocator(1))
    with pytest.raises(ValueError, match="the name must be an identifier, got 'two words'"):
        register_allocator("two words", lambda cfg: UniformAllocator(1))
    with pytest.raises(TypeError, match="register allocator 'x': the factory must be callable, got int"):
        register_allocator("x", 3)
    with pytest.raises(KeyError, match="'x' is not registered"):
        unregister_allocator("x")
    assert ALLOCATORS.names() == BUILTIN_ALLOCATORS  # nothing was registered on the way


def test_gvm_probes_then_allocates_by_hand(policy, scripted_norms):
    engine = StubEngine(ACCEPTED)
    cfg = AllocationConfig(allocator="gvm", n_per_prompt=4, n_probe=4)
    alloc = build_allocator(cfg).allocate(PROMPTS, ctx(engine, policy))
    # The probe: 4 samples per prompt, sampled with the step's spec and the context's seed.
    [(prompts, counts, spec, seed)] = engine.calls
    assert prompts == [p.prompt for p in PROMPTS] and counts == [4] * 4
    assert spec == SamplingSpec(temperature=0.9, max_new_tokens=5) and seed == 7
    assert alloc.probe_rollouts == 16 == cfg.n_probe * len(PROMPTS) and alloc.probe_tokens == 16 * 3
    assert scripted_norms == [7]  # norms only for the 7 accepted samples
    # p = [2/4, 0, 4/4, 1/4]; G = mean accepted norms = [(1+3)/2, 0, 2, 4] = [2, 0, 2, 4]
    # w = G / sqrt(p + 1e-3/p): [2/sqrt(.502), 0, 2/sqrt(1.001), 4/sqrt(.254)] = [2.8228, 0, 1.9990, 7.9368]
    # shares = 16 w / 12.7586 = [3.540, 0, 2.507, 9.953] -> floors [3, 0, 2, 9] (14), the two largest
    # residuals (.953, .540) get the remaining 2 -> [4, 0, 2, 10]
    assert alloc.counts.tolist() == [4, 0, 2, 10]
    assert alloc.counts.tolist() == gvm_allocate([2.0, 0.0, 2.0, 4.0], [0.5, 0.0, 1.0, 0.25], 16).tolist()
    assert alloc.stats == pytest.approx(
        {
            M.ALLOC_N_MIN: 0.0,
            M.ALLOC_N_MAX: 10.0,
            M.ALLOC_ZERO_PROMPTS: 1.0,
            M.ALLOC_P_MEAN: (0.5 + 0 + 1 + 0.25) / 4,
            M.ALLOC_G_MEAN: (2 + 2 + 4) / 3,
            M.ALLOC_GRAD_TIED: 1.0,
            M.ALLOC_PROBED_PROMPTS: 4.0,
        }
    )


def test_gvm_passes_every_option_to_gvm_allocate(policy, scripted_norms):
    opts = {
        "alpha": 0.01,
        "beta": 1.5,
        "filter_threshold": 0.9,
        "filter_insufficient": 0.1,
        "min_per_prompt": 1,
        "max_per_prompt": 9,
    }
    cfg = AllocationConfig(allocator="gvm", n_per_prompt=4, n_probe=4, grad_params="last_layer", **opts)
    alloc = build_allocator(cfg).allocate(PROMPTS, ctx(StubEngine(ACCEPTED), policy))
    want = gvm_allocate([2.0, 0.0, 2.0, 4.0], [0.5, 0.0, 1.0, 0.25], 16, **opts)
    assert alloc.counts.tolist() == want.tolist()
    # By hand: w = G / sqrt(p + 0.01 / p^0.5) = [2.7893, 0, 1.9901, 7.6980] -> shares [3.577, 0, 2.552,
    # 9.871]; prompt 2 (p = 1 > 0.9) and prompt 1 (p x share = 0 < 0.1) are filtered, the rest renormalise
    # to [4.256, 0, 0, 11.744]; the cap fixes prompt 3 at 9, the floor prompts 1 and 2 at 1, prompt 0
    # takes the remaining 16 - 9 - 2 = 5.
    assert want.tolist() == [5, 1, 1, 9]
    assert alloc.stats[M.ALLOC_GRAD_TIED] == 0.0  # last-layer weights are not the tied embedding


def test_gvm_when_every_probe_fails_falls_back_to_uniform(policy, scripted_norms):
    alloc = build_allocator(AllocationConfig(allocator="gvm", n_per_prompt=4, n_probe=4)).allocate(
        PROMPTS, ctx(StubEngine([[0] * 4] * 4), policy)
    )
    assert alloc.counts.tolist() == [4, 4, 4, 4]  # no signal: gvm_allocate's documented uniform split
    assert alloc.probe_rollouts == 16 and scripted_norms == []
    assert alloc.stats[M.ALLOC_P_MEAN] == 0.0 and alloc.stats[M.ALLOC_G_MEAN] == 0.0


# ---------------------------------------------------------------- config


def test_allocation_defaults():
    a = AllocationConfig()
    assert (a.allocator, a.n_per_prompt, a.n_probe, a.alpha, a.beta) == ("uniform", 8, 8, 1e-3, 2.0)
    assert (a.filter_threshold, a.filter_insufficient, a.min_per_prompt, a.max_per_prompt) == (
        1.0,
        0.0,
        0,
        None,
    )
    assert a.grad_params == "embedding"


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "allocator",
            "best",
            (
                "allocation.allocator: unknown allocator; known: uniform, gvm, gvm_reuse, dapo, gvm_oracle"
                ", reinforce_ada, greso, knapsack, variance, probe_trains (got 'best')"
            ),
        ),
        ("n_probe", 0, "allocation.n_probe: Input should be greater than or equal to 1 (got 0)"),
        ("alpha", 0, "allocation.alpha: Input should be greater than 0 (got 0)"),
        ("beta", float("inf"), "allocation.beta: Input should be a finite number (got inf)"),
        (
            "filter_threshold",
            1.5,
            "allocation.filter_threshold: Input should be less than or equal to 1 (got 1.5)",
        ),
        (
            "filter_insufficient",
            -1,
            "allocation.filter_insufficient: Input should be greater than or equal to 0",
        ),
        ("min_per_prompt", 9, "allocation: Value error, min_per_prompt (9) > n_per_prompt (8)"),
        ("max_per_prompt", 7, "allocation: Value error, max_per_prompt (7) < n_per_prompt (8)"),
        (
            "max_per_prompt",
            0,
            "allocation.max_per_prompt: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            "grad_params",
            "bias",
            "allocation.grad_params: Input should be 'embedding', 'lm_head', 'last_layer' or",
        ),
        ("n_probes", 4, "allocation.n_probes: unknown key"),
    ],
)
def test_allocation_errors_name_the_field(key, value, message):
    with pytest.raises(ConfigError) as e:
        validate_dict({"allocation": {"allocator": "gvm", key: value}}, "exp.yaml")
    assert str(e.value).startswith(f"exp.yaml: {message}")


def test_bounds_equal_to_the_budget_are_allowed():
    a = validate_dict(
        {"allocation": {"allocator": "gvm", "n_per_prompt": 4, "min_per_prompt": 4, "max_per_prompt": 4}}
    ).allocation
    assert (a.min_per_prompt, a.max_per_prompt) == (4, 4)
