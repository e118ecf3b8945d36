"""Tasks: what the policy is asked, how a response is scored, and the held-out evaluation.

- `base`: `Problem` and `TaskData` (the SFT / RL-train / held-out splits), which every task builds;
- `task`: the demo's procedural reasoning-gym `chain_sum` task, and `build_task`, which picks the task;
- `evaluate`: rewards of a batch and the held-out evaluation (greedy accuracy, mean@k, format rate);
- the paper's math setting (docs/method.md §6): `math` (answer extraction and verification with
  Math-Verify, `score(response, gold)`), `math_data` (training prompts from MATH / NuminaMath-style JSONL
  or Parquet, the `qwen25-math-cot` template, the five evaluation sets), `math_eval` (mean@k and pass@k
  over the `math5` suite, and how they are recorded).
"""
