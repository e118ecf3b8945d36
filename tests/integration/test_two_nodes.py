"""A real two-node Ray cluster on loopback: a head, then a worker node joined with `ray start --address`.
A 2-learner experiment runs across it (each learner's bundle holds a learner and its rollout actor, so
a 2-CPU node takes one), and the test stops exactly the Ray processes it started (those whose command
line names its own temp dir), never another Ray on the machine."""

import os
import subprocess
import sys
import time

import pytest
from ray_cluster import free_port, new_temp_dir, ours, start_node, stop_ours

from dibs.platform.core import metrics as M
from dibs.platform.store import open_store

pytestmark = pytest.mark.integration

SMOKE = [
    "model.hidden_size=64",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "model.intermediate_size=128",
    "task.train_size=256",
    "task.test_size=64",
    "task.sft_size=2000",
    "warm_start.steps=20",
    "warm_start.batch_size=32",
    "train.steps=3",
    "train.prompts_per_step=8",
    "allocation.n_per_prompt=4",
    "eval.every=3",
    "eval.k=1",
    "learner.backend=torch",
    "learner.zero_stage=0",
]


@pytest.fixture
def cluster():
    temp_dir = new_temp_dir()
    port = free_port()
    # One CPU a node: a learner bundle (1 thread, its actor taking turns on it) fills a node, so the two
    # learners must go to different nodes.
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1"]
    try:
        start_node(
            ["--head", f"--port={port}", f"--temp-dir={temp_dir}", "--include-dashboard=false", *common]
        )
        start_node([f"--address=127.0.0.1:{port}", *common])
        yield f"127.0.0.1:{port}", temp_dir
    finally:
        stop_ours(temp_dir)


def test_two_learners_across_two_nodes(cluster, tmp_path):
    address, temp_dir = cluster
    deadline = time.time() + 60
    while len(ours(temp_dir)) < 4 and time.time() < deadline:  # two raylets and their helpers
        time.sleep(0.5)
    url = f"sqlite:///{tmp_path}/dibs.db"
    out = tmp_path / "runs"
    args = [
        "run",
        "experiments/distributed.yaml",
        "--db",
        url,
        "--name",
        "two-nodes",
        "--set",
        f"runtime.address={address}",
        "--set",
        f"runtime.output_dir={out}",
        "--set",
        f"model.cache_dir={tmp_path}/models",
    ]
    for item in SMOKE:
        args += ["--set", item]
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "dibs.platform.cli", *args],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_id = proc.stdout.split()[1].rstrip(":")
    nodes = {(out / run_id / "workers" / f"rank{r}.node").read_text() for r in (0, 1)}
    assert len(nodes) == 2  # one learner (and its rollout actor) per node
    run = open_store(url).get_run(run_id)
    assert run["status"] == "finished"
    assert sorted(m["step"] for m in run["metrics"] if m["name"] == M.ROLLOUT_REWARD) == [1, 2, 3]
    before = {p.pid for p in ours(temp_dir)}
    assert before  # the cluster is still up: the run used it and left it alone
