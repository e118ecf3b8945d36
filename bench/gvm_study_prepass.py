"""The GVM study's pre-pass and its go/no-go figure (bench/gvm_study.py runs both before any training).

For each seed, the warm-started policy samples every RL training prompt `samples` times (the same
sampling spec as the rollouts). That gives each prompt's pass rate p_i and its gradient norm G_i (the mean
‖∇ summed NLL‖ over the accepted samples, on the parameters GVM uses), measured far more finely than any
probe: the "truth" the study checks allocations against.

The go/no-go figure predicts, before a single RL step, what allocation can buy in this regime. For a
batch of m prompts drawn from the pool, the variance of the rejection-sampling gradient estimate is
proportional to V(n) = Σ_i G_i² / (n_i p_i) over the prompts with p_i > 0 (the quantity GVM minimises).
The predicted gain of an allocation is V(uniform) / V(allocation), averaged over many random batches:
- `oracle`: the GVM rule on the true (p, G), with the oracle's floor of one rollout per prompt;
- `gvm_probe`: the GVM rule on estimates from a simulated probe of `n_probe` samples per prompt
  (p̂ = Binomial(n_probe, p)/n_probe, Ĝ = G when a probe sample is accepted). A solvable prompt it gives
  no rollout has no gradient estimate at all (infinite variance, a bias rather than noise); those are
  counted, and the gain is taken on the prompts it covered (uniform's V over the same prompts).
"""

from __future__ import annotations

import numpy as np

from dibs.algorithms.allocation import gvm_allocate

GO_THRESHOLD = 1.3  # below this predicted oracle gain, allocation cannot matter here: change the regime first


def prepass(cfg, data, samples: int, *, chunk: int = 64) -> dict:
    """Sample every training prompt `samples` times with the warm start of `cfg`; per prompt: pass rate,
    gradient norm and accepted count."""
    from dibs.platform.allocation.estimators import accept_rates, grad_norm_estimates
    from dibs.platform.learn.warm_start import prepare
    from dibs.platform.rollout.torch_engine import local_engine
    from dibs.platform.runtime.loop import sampling_spec
    from dibs.platform.runtime.recording import NullProgress
    from dibs.platform.tasks.evaluate import score_groups
    from dibs.platform.tasks.registry import make_task

    data, policy, tokenizer, _, _ = prepare(cfg, NullProgress(), data)
    task = make_task(cfg.task)
    engine = local_engine(cfg.rollout.engine, policy, tokenizer)
    spec = sampling_spec(cfg)
    prompts, p, g = [], [], []
    for start in range(0, len(data.train), chunk):
        batch = data.train[start : start + chunk]
        ro = engine.generate(
            [q.prompt for q in batch], [samples] * len(batch), spec, seed=cfg.seed * 7 + start
        )
        rewards = score_groups(task, ro, batch)
        p.extend(accept_rates(rewards, ro.group_ids, len(batch)).tolist())
        g.extend(
            grad_norm_estimates(
                policy,
                ro,
                rewards,
                len(batch),
                params=cfg.allocation.grad_params,
                temperature=spec.temperature,
            ).tolist()
        )
        prompts.extend(q.prompt for q in batch)
    return {
        "seed": cfg.seed,
        "samples": samples,
        "prompts": prompts,
        "p": [round(x, 5) for x in p],
        "g": [round(x, 6) for x in g],
    }


def variance_proxy(p: np.ndarray, g: np.ndarray, n: np.ndarray) -> tuple[float, int]:
    """Σ G²/(n p) over the prompts with p > 0 and n > 0, and how many prompts with p > 0 got n = 0."""
    solvable = p > 0
    got = solvable & (n > 0)
    v = float(np.sum(g[got] ** 2 / (n[got] * p[got])))
    return v, int((solvable & (n == 0)).sum())


def predicted_gain(
    p, g, *, m: int, n: int, n_probe: int, alpha: float, beta: float, batches: int = 2000, seed: int = 0
) -> dict:
    """The go/no-go numbers for one pool (see the module docstring): mean per-batch V(uniform)/V(alloc)
    for the oracle and the simulated probe, and the probe's share of solvable prompts given nothing."""
    p, g = np.asarray(p, dtype=float), np.asarray(g, dtype=float)
    rng = np.random.default_rng(seed)
    uniform = np.full(m, n)
    oracle, probe, missed, solvable = [], [], 0, 0
    for _ in range(batches):
        idx = rng.choice(len(p), size=m, replace=False)
        pb, gb = p[idx], g[idx]
        v_u, _ = variance_proxy(pb, gb, uniform)
        if v_u == 0:
            continue  # no solvable prompt in the batch: nothing to estimate either way
        n_o = gvm_allocate(gb, pb, m * n, alpha=alpha, beta=beta, min_per_prompt=1)
        oracle.append(v_u / variance_proxy(pb, gb, n_o)[0])
        k = rng.binomial(n_probe, pb)
        n_p = gvm_allocate(np.where(k > 0, gb, 0.0), k / n_probe, m * n, alpha=alpha, beta=beta)
        v_p, miss = variance_proxy(pb, gb, n_p)
        v_uc, _ = variance_proxy(np.where(n_p > 0, pb, 0.0), gb, uniform)  # uniform on the same prompts
        if v_p > 0:
            probe.append(v_uc / v_p)
        missed += miss
        solvable += int((pb > 0).sum())
    if not oracle:  # no solvable prompt anywhere: nothing to allocate
        return {
            "oracle_gain": None,
            "gvm_probe_gain_on_covered": None,
            "gvm_probe_solvable_zero_frac": None,
            "batches": 0,
        }
    return {
        "oracle_gain": round(float(np.mean(oracle)), 3),
        "gvm_probe_gain_on_covered": round(float(np.mean(probe)), 3),
        "gvm_probe_solvable_zero_frac": round(missed / max(solvable, 1), 3),
        "batches": len(oracle),
    }


def pool_summary(p) -> dict:
    """How the pass rates of a pool spread: the share of prompts in each band, and the mean."""
    p = np.asarray(p, dtype=float)
    bands = {
        "p=0": p == 0,
        "0<p<=0.1": (p > 0) & (p <= 0.1),
        "0.1<p<=0.5": (p > 0.1) & (p <= 0.5),
        "0.5<p<=0.9": (p > 0.5) & (p <= 0.9),
        "p>0.9": p > 0.9,
    }
    return {name: round(float(mask.mean()), 3) for name, mask in bands.items()} | {
        "mean": round(float(p.mean()), 3)
    }
