"""Tasks: what the policy is asked, how a response is scored, and the held-out evaluation.

- `base`: the `Task` Protocol, `Problem` and `TaskData` (the SFT / RL-train / held-out splits);
- `registry`: `task.kind` -> the task's factory; `register_task` adds a task from user code;
- `chain_sum`: the demo's procedural reasoning-gym `chain_sum` task (`task.kind: reasoning_gym`);
- `math_task`: the paper's math setting (`task.kind: math`, docs/method.md §6) over `math` (answer
  extraction and verification with Math-Verify, `score(response, gold)`), `math_data` (training prompts from
  MATH / NuminaMath-style JSONL or Parquet, the `qwen25-math-cot` template, the five evaluation sets) and
  `math_eval` (mean@k and pass@k over the `math5` suite, and how they are recorded);
- `evaluate`: rewards of a batch and the held-out evaluation (greedy accuracy, mean@k, format rate), for
  any task.
"""
