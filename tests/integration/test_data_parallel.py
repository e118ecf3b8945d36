"""Two data-parallel ranks compute the one-process update: the same grad norm, stats and weights after
two optimizer steps on a ragged batch, for the torch learner (gradients summed over gloo) and for
DeepSpeed ZeRO-2 and ZeRO-3 (averaged by DeepSpeed, the loss scaled by the world size; under ZeRO-3 the
weights are gathered from the ranks' partitions)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("dp_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(backend: str, world: int, out: Path) -> dict:
    env = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), backend, str(r), str(world), str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(world)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return run("torch", 1, tmp_path_factory.mktemp("dp") / "ref.pt")


@pytest.mark.parametrize("backend", ["torch", "zero2", "zero3"])
def test_two_ranks_equal_one_process(reference, backend, tmp_path):
    two = run(backend, 2, tmp_path / f"{backend}.pt")
    assert two["stats"]["optimizer_steps"] == reference["stats"]["optimizer_steps"] == 2
    for key in ("grad_norm", "pg_loss", "clip_frac", "ratio_mean"):
        assert two["stats"][key] == pytest.approx(reference["stats"][key], rel=1e-4, abs=1e-7), key
    for name, w in reference["weights"].items():
        if name.endswith("k_proj.bias"):
            # A key bias shifts every logit of a query's row equally: softmax makes its gradient 0 up to
            # rounding noise, which Adam's normalisation blows up to +-lr in an arbitrary direction.
            continue
        torch.testing.assert_close(two["weights"][name], w, rtol=1e-5, atol=1e-6, msg=name)
