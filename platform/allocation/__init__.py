"""Allocation: how many rollouts each prompt of a step gets.

- `estimators`: the probe's statistics (acceptance rates p̂_i, per-sample gradient norms Ĝ_i);
- `allocators`: the `Allocator` Protocol, the `Allocation` it returns, and uniform, gvm, gvm_reuse and
  gvm_oracle;
- `batch`: the `Batch` a step's generation stage hands on (and the rollouts it dropped);
- `dapo`: DAPO dynamic sampling (`Refill`), a generation stage of its own;
- `factory`: `build_allocator` and `build_stage`, what a config names; `register_allocator` adds one.
"""
