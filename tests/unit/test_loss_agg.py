"""Loss aggregation (train.loss_agg) and the update count (train.mini_batch_samples): prompt_mean's
weights and loss by hand on a ragged batch, its exactness under micro-batching and data parallelism, the
unchanged token_mean default, and how many optimizer steps an update takes."""

import copy
import math

import pytest
import torch

from dibs.algorithms.losses import clipped_policy_loss, policy_loss, prompt_mean_weights, raft_loss
from dibs.platform.core.config import ConfigError, ExperimentConfig, load_config
from dibs.platform.core.parallel import DataParallel
from dibs.platform.learn.learner import TorchLearner
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.rollout.base import SamplingSpec
from dibs.platform.rollout.hf_engine import HFEngine
from dibs.platform.runtime.budget import Budget
from dibs.platform.runtime.local import learner_kwargs
from dibs.platform.tasks.chain_sum import ALPHABET

pytestmark = pytest.mark.unit

# Three groups of sizes 3, 1, 2. Contributing samples (advantage != 0): 0 and 2 of group 0, none of
# group 1, both of group 2. T_0 = 2 + 4 = 6, T_2 = 1 + 3 = 4, P = 2 groups, so
# w = [1/(2*6), 0, 1/(2*6), 0, 1/(2*4), 1/(2*4)] = [1/12, 0, 1/12, 0, 1/8, 1/8].
GROUPS = torch.tensor([0, 0, 0, 1, 2, 2])
ADV = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5, -0.5])
LENGTHS = torch.tensor([2, 3, 4, 5, 1, 3])
WEIGHTS = [1 / 12, 0.0, 1 / 12, 0.0, 1 / 8, 1 / 8]


def _batch():
    """logp = -1 on each sample's first LENGTHS[b] tokens (of 5), 0 on padding."""
    mask = (torch.arange(5)[None] < LENGTHS[:, None]).float()
    return -mask.clone(), mask


def test_prompt_mean_weights_by_hand():
    w = prompt_mean_weights(GROUPS, ADV, LENGTHS)
    torch.testing.assert_close(w, torch.tensor(WEIGHTS, dtype=torch.float64))
    # Token-weighted, the contributing prompts get 1/P each: (2 + 4)/12 = 0.5 and (1 + 3)/8 = 0.5.
    assert float((w * LENGTHS).sum()) == pytest.approx(1.0)
    # Group ids need not be 0..G-1 nor contiguous: relabelled and shuffled, the same weights follow.
    perm = torch.tensor([5, 0, 3, 1, 4, 2])
    torch.testing.assert_close(prompt_mean_weights((GROUPS * 7 + 3)[perm], ADV[perm], LENGTHS[perm]), w[perm])


def test_prompt_mean_weights_without_contributing_samples_are_zero():
    assert prompt_mean_weights(GROUPS, torch.zeros(6), LENGTHS).tolist() == [0.0] * 6
    assert prompt_mean_weights(GROUPS[:0], ADV[:0], LENGTHS[:0]).shape == (0,)
    with pytest.raises(ValueError, match="one shape"):
        prompt_mean_weights(GROUPS, ADV[:5], LENGTHS)


def test_prompt_mean_raft_loss_by_hand():
    logp, mask = _batch()
    # sum_t logp_bt = -len_b, so loss = -sum_b w_b A_b (-len_b)
    #   = 2/12 + 4/12 + 0.5 * 1/8 - 0.5 * 3/8 = 0.5 - 0.125 = 0.375.
    loss, stats = raft_loss(logp, ADV, mask, weights=prompt_mean_weights(GROUPS, ADV, LENGTHS))
    assert float(loss) == pytest.approx(0.375) and stats["pg_loss"] == pytest.approx(0.375)
    # token_mean over the 18 tokens instead: (2 + 4 + 0.5 - 1.5) / 18 = 5/18 (unchanged default).
    loss, _ = raft_loss(logp, ADV, mask)
    assert float(loss) == pytest.approx(5 / 18)


def test_prompt_mean_clipped_loss_and_kl_by_hand():
    logp, mask = _batch()
    w = prompt_mean_weights(GROUPS, ADV, LENGTHS)
    # ratio 1 everywhere (old = logp): pg = -sum_b w_b A_b len_b = -0.375. ref = logp - 1 gives
    # k3 = e^-1 - (-1) - 1 = e^-1 per token, weighted like the pg term: sum_b w_b len_b e^-1 = e^-1
    # (the zero-weight samples 1 and 3 add no KL).
    loss, stats = clipped_policy_loss(
        logp, logp.clone(), ADV, mask, kl_coef=0.5, ref_logp=logp - 1, weights=w
    )
    assert stats["pg_loss"] == pytest.approx(-0.375)
    assert stats["kl"] == pytest.approx(math.exp(-1))
    assert float(loss) == pytest.approx(-0.375 + 0.5 * math.exp(-1))
    with pytest.raises(ValueError, match="token_count or weights"):
        policy_loss("grpo", logp, logp, ADV, mask, token_count=18, weights=w)


def test_prompt_mean_micro_batches_sum_to_the_one_shot_loss():
    logp, mask = _batch()
    logp.requires_grad_(True)
    w = prompt_mean_weights(GROUPS, ADV, LENGTHS)
    whole, _ = policy_loss("raftpp", logp, logp.detach(), ADV, mask, weights=w)
    (g_whole,) = torch.autograd.grad(whole, logp)
    parts = [torch.tensor([0, 3, 5]), torch.tensor([1, 2]), torch.tensor([4])]
    total = sum(
        policy_loss("raftpp", logp[i], logp[i].detach(), ADV[i], mask[i], weights=w[i])[0] for i in parts
    )
    (g_parts,) = torch.autograd.grad(total, logp)
    # ratio 1: -sum_b w_b A_b len_b = -0.375, as in the hand-computed case above.
    assert float(total.detach()) == pytest.approx(float(whole.detach())) == pytest.approx(-0.375)
    torch.testing.assert_close(g_parts, g_whole)


# ---------------------------------------------------------------- through the learner, on a tiny model


@pytest.fixture(scope="module")
def tiny():
    from transformers import Qwen2ForCausalLM

    from dibs.platform.core.config import ModelConfig

    tok = train_tokenizer(ALPHABET)
    cfg = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(qwen2_config(cfg, tok))
    # 13 samples in ragged groups of 3, 1, 4, 2, 3.
    ro = HFEngine(copy.deepcopy(model), tok).generate(
        ["1+2=", "9-8+7=", "3+4=", "5-1=", "2+2+2="], [3, 1, 4, 2, 3], SamplingSpec(max_new_tokens=5), seed=1
    )
    return model, ro


# GRPO-like advantages: group 1 (sample 3) and group 3 (samples 8, 9) have none, the rest are mixed.
ADV13 = torch.tensor([1.0, -0.5, -0.5, 0.0, 1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 0.7, -0.7, 0.7])


def _learner(model, **kwargs):
    learner = TorchLearner(
        model,
        lr=1e-2,
        weight_decay=0.0,
        grad_clip=1e6,
        total_steps=1,
        algorithm="grpo",
        **({"micro_batch_size": 13} | kwargs),
    )
    learner.backend.opt.step = lambda: None  # keep the accumulated gradient to compare
    return learner


def _grad(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("loss_agg", ["token_mean", "prompt_mean"])
def test_learner_matches_the_one_shot_loss_for_any_micro_batching(tiny, loss_agg):
    model, ro = tiny
    # The one-shot loss on the whole batch, by the loss function itself.
    ref = copy.deepcopy(model)
    from dibs.platform.learn.learner import token_logprobs

    logp = token_logprobs(ref, ro)
    agg = (
        {"token_count": ro.num_tokens}
        if loss_agg == "token_mean"
        else {"weights": prompt_mean_weights(ro.group_ids, ADV13, ro.response_mask.sum(1))}
    )
    loss, expected = policy_loss("grpo", logp, ro.old_logp, ADV13, ro.response_mask, **agg)
    loss.backward()
    g_ref = _grad(ref)
    for micro in (13, 4, 1):
        m = copy.deepcopy(model)
        stats = _learner(m, micro_batch_size=micro, loss_agg=loss_agg).update(ro, ADV13, seed=0)
        torch.testing.assert_close(_grad(m), g_ref, rtol=1e-5, atol=1e-7)
        # pg_loss adds up over micro-batches to the one-shot value.
        assert stats["pg_loss"] == pytest.approx(expected["pg_loss"], rel=1e-5)


class _Rank(DataParallel):
    """A rank of a 2-process world without torch.distributed: each trains on its own share only."""

    active = False


def test_prompt_mean_is_exact_under_data_parallel_shards(tiny):
    model, ro = tiny
    one = copy.deepcopy(model)
    _learner(one, loss_agg="prompt_mean").update(ro, ADV13, seed=0)
    ranks = []
    for rank in range(2):
        m = copy.deepcopy(model)
        _learner(m, loss_agg="prompt_mean", dp=_Rank(rank, 2)).update(ro, ADV13, seed=0)
        ranks.append(_grad(m))
    # The weights come from the whole mini-batch, so the ranks' gradients sum to the one-process one.
    torch.testing.assert_close(ranks[0] + ranks[1], _grad(one), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("samples", "epochs", "updates"), [(4, 1, 4), (13, 1, 1), (20, 1, 1), (4, 2, 8), (1, 1, 13)]
)
def test_mini_batch_samples_sets_the_update_count(tiny, samples, epochs, updates):
    # B = 13: ceil(13 / 4) = 4 mini-batches (4, 4, 4, 1), ceil(13 / 13) = ceil(13 / 20) = 1, twice 4 with
    # two epochs, and one sample a step gives 13.
    model, ro = tiny
    learner = _learner(copy.deepcopy(model), mini_batch_samples=samples, epochs=epochs)
    assert learner.update(ro, ADV13, seed=0)["optimizer_steps"] == updates
    cuts = learner.rl.mini_batches(ro.group_ids, torch.Generator().manual_seed(0))
    assert sorted(len(c) for c in cuts) == sorted(
        [samples] * (13 // samples) + [13 % samples] * (13 % samples > 0)
    )
    assert sorted(torch.cat(cuts).tolist()) == list(range(13))  # every sample once per epoch


def test_minibatches_split_by_group_as_before(tiny):
    model, ro = tiny
    learner = _learner(copy.deepcopy(model), minibatches=2)
    # The previous code, inline: groups shuffled by the seeded generator, chunked, samples of each chunk.
    gen = torch.Generator().manual_seed(5)
    groups = torch.unique(ro.group_ids)
    order = groups[torch.randperm(len(groups), generator=gen)]
    before = [torch.nonzero(torch.isin(ro.group_ids, c)).squeeze(-1) for c in order.chunk(2)]
    now = learner.rl.mini_batches(ro.group_ids, torch.Generator().manual_seed(5))
    assert [c.tolist() for c in now] == [c.tolist() for c in before]
    assert learner.update(ro, ADV13, seed=0)["optimizer_steps"] == 2


# ---------------------------------------------------------------- config, schedule, budget


def test_config_errors_name_the_keys(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("train:\n  minibatches: 2\n  mini_batch_samples: 4\n")
    with pytest.raises(ConfigError, match=r"train\.minibatches \(2\) and train\.mini_batch_samples \(4\)"):
        load_config(p)
    p.write_text("train:\n  mini_batch_samples: 0\n")
    with pytest.raises(ConfigError, match=r"train\.mini_batch_samples: "):
        load_config(p)
    p.write_text("train:\n  loss_agg: sample_mean\n")
    with pytest.raises(ConfigError, match=r"train\.loss_agg: "):
        load_config(p)
    cfg = ExperimentConfig()
    assert cfg.train.loss_agg == "token_mean" and cfg.train.mini_batch_samples is None


def test_schedule_length_counts_updates():
    # 10 steps x 2 epochs x ceil(4 prompts x 8 samples / 5) = 10 x 2 x 7 = 140; by groups 10 x 2 x 3 = 60.
    base = {
        "train": {"steps": 10, "epochs_per_batch": 2, "prompts_per_step": 4},
        "allocation": {"n_per_prompt": 8},
    }
    cfg = ExperimentConfig.model_validate(base | {"train": base["train"] | {"mini_batch_samples": 5}})
    assert learner_kwargs(cfg, None)["total_steps"] == 140
    cfg = ExperimentConfig.model_validate(base | {"train": base["train"] | {"minibatches": 3}})
    assert learner_kwargs(cfg, None)["total_steps"] == 60


def test_budget_counts_updates_and_restores_old_snapshots():
    budget = Budget(rollouts=5, updates=3)
    assert budget.snapshot()["updates"] == 3
    old = {k: v for k, v in budget.snapshot().items() if k != "updates"}  # saved before the counter existed
    restored = Budget()
    restored.restore(old)
    assert restored.updates == 0 and restored.rollouts == 5
