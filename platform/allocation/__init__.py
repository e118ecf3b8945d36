"""Allocation: how many rollouts each prompt of a step gets.

- `estimators`: the probe's statistics (acceptance rates p̂_i, per-sample gradient norms Ĝ_i);
- `allocators`: the `Allocator` Protocol, the `Allocation` it returns, and uniform, gvm, gvm_reuse and
  gvm_oracle;
- `batch`: the `Batch` a step's generation stage hands on (and the rollouts it dropped);
- `dapo`: DAPO dynamic sampling (`Refill`), a generation stage of its own;
- the allocator zoo (docs/method.md §8), one module each: `reinforce_ada` (rounds with an exit rule, its
  `AdaRounds` generation stage), `greso` (skip prompts with zero-variance streaks), `knapsack` (value of a
  prompt's rollouts against their token cost), `variance` (Beta posteriors, most informative groups),
  `probe_trains` (GVM whose probe also trains);
- `factory`: `build_allocator` and `build_stage`, what a config names; `register_allocator` adds one.
"""
