"""Running the loop: the RL loop itself and where it executes.

- `loop`: the RL loop as named stages (sample, allocate, generate, score, update, evaluate, record);
- `recording`: where a worker's loop sends metric rows, checkpoints and progress events;
- `runner`: the executors (one Ray task, or inline in the driver);
- `distributed`: Ray Train over `learner.num_workers` learner ranks, each with its own rollout actor;
- `heartbeat`: the driver's renewal of the run's lease, and its stop signals.
"""
