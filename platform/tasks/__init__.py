"""Tasks beyond the procedural demo: the paper's math setting (docs/method.md §6).

- `math`: answer extraction and verification with Math-Verify (`score(response, gold)`);
- `math_data`: training prompts (MATH / NuminaMath-style JSONL or Parquet), the `qwen25-math-cot`
  template and the five evaluation sets;
- `math_eval`: mean@k and pass@k over the `math5` suite, and how they are recorded.
"""
