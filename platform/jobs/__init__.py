"""Ray Jobs: `dibs submit` and `dibs jobs` run and supervise runs and sweeps on a Ray cluster.

- `jobs`: submission (the project uploaded, the store URL's password never sent), listing, status, logs,
  stop and retry; `job_upload`: the git-tracked files a job uploads;
- `entrypoint`: the shell command a job runs on the cluster (and a retry's);
- `jobs_cli`: the `dibs submit` and `dibs jobs` subcommands.
"""
