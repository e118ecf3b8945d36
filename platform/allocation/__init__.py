"""Allocation: how many rollouts each prompt of a step gets.

- `estimators`: the probe's statistics (acceptance rates p̂_i, per-sample gradient norms Ĝ_i);
- `allocators`: the `Allocator` Protocol and uniform, gvm, gvm_reuse and gvm_oracle;
- `dapo`: DAPO dynamic sampling as an allocator (built on allocators' types);
- `factory`: `build_allocator`, the allocator a config names.
"""
