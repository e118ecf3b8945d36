"""Running the loop: the RL loop itself and where it executes.

- `base`: the `Runtime` Protocol (where the loop's parts come from) and `RunPayload` (what an executor
  hands its worker);
- `loop`: the RL loop as named stages (sample, allocate, generate, score, update, evaluate, record);
- `local`: the one-process runtime (`LocalRuntime`) and the learner's settings from a config;
- `recording`: where a worker's loop sends metric rows, checkpoints and progress events;
- `runner`: the executors (one Ray task, or inline in the driver);
- `distributed`: Ray Train over `learner.num_workers` learner ranks, each with its own rollout actor;
- `heartbeat`: the driver's renewal of the run's lease, and its stop signals.
"""
