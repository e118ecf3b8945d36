"""Sweeps: Ray Tune (with Optuna) over the hyper-parameters of one experiment, trials compared at equal
rollouts.

- `sweep_config`: the sweep YAML (base experiment, search space, search algorithm, scheduler, repeats);
- `sweep`: what a trial does (its runs, reported at each evaluation) and the best configuration's YAML;
- `sweep_driver`: `dibs sweep`, starting or resuming a sweep's Tuner with a live table of its trials;
- `sweep_storage`: the sweep's Optuna storage in the results database, its password kept out of Tune's files.
"""
