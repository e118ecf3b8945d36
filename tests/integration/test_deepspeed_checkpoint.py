"""DeepSpeed's checkpoint files load without unpickling anything but tensors and DeepSpeed's three
bookkeeping classes: a state saved at ZeRO stage 2 or 3 comes back, no conversion script is left in the
checkpoint, and a pickle payload planted in any of its .pt files is refused without running."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("ds_ckpt_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_state_loads_weights_only(stage, tmp_path):
    env = os.environ | {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "PYTHONWARNINGS": "ignore",
    }
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(stage), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads(lines[0].removeprefix("RESULT "))
    prefix = "zero_pp_rank_0_" if stage == 3 else ""
    assert result["files"] == [
        f"deepspeed/state/{prefix}mp_rank_00_model_states.pt",
        "deepspeed/state/zero_pp_rank_0_mp_rank_00_optim_states.pt",
    ]
    assert result["restored"] is True
    assert set(result["planted"]) == set(result["files"])
    for name, error in result["planted"].items():
        assert error.startswith(f"{Path(name).name}: refused (UnpicklingError: Weights only load failed"), (
            error
        )
    assert result["marker"] is False
