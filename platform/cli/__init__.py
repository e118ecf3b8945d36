"""The command line, the top layer: `dibs` (`python -m dibs.platform.cli`) and what only it uses.

- `main`: the `dibs` command (validate, run, resume; runs, export, dashboard, db, sweep(s) come from
  `store_cli`, `eval` from `eval_cli`, `submit` and `jobs` from jobs/jobs_cli.py); `errors`: its one-line
  error reports;
- `eval_cli`: `dibs eval CHECKPOINT --suite math5`; `arg_types`: argparse value types;
- `display`: live progress during a run and the before/after summary at its end;
- `config_doc`: writes docs/config.md from the config's field descriptions;
- `job_entry`: a `dibs submit` job's process on the cluster: finds the store URL there, runs `main`.
"""
