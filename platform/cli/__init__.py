"""The command line, the top layer: `dibs` (`python -m dibs.platform.cli`) and what only it uses.

- `main`: the `dibs` command (validate, run, resume, runs, export, dashboard, db, sweep(s); `eval`,
  `submit` and `jobs` come from `eval_cli` and jobs/jobs_cli.py);
- `eval_cli`: `dibs eval CHECKPOINT --suite math5`; `arg_types`: argparse value types;
- `display`: live progress during a run and the before/after summary at its end;
- `config_doc`: writes docs/config.md from the config's field descriptions;
- `job_entry`: a `dibs submit` job's process on the cluster: finds the store URL there, runs `main`.
"""
