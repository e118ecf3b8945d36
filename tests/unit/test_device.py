"""Device placement (the GPU path) as far as a CPU machine can check it: `runtime.device`,
batches moving to the learner's device, the GPU a colocated rollout actor is given, the learner's
placement-group bundle, and the engine sleeping through the update."""

import pytest
import torch

from dibs.platform.cli.main import main
from dibs.platform.core.config import ConfigError, load_config
from dibs.platform.learn.model import resolve_device
from dibs.platform.rollout.base import Rollouts
from dibs.platform.runtime.distributed import learner_bundle, physical_gpu, rollout_threads

pytestmark = pytest.mark.unit


def batch() -> Rollouts:
    return Rollouts(
        torch.ones(2, 3, dtype=torch.long),
        torch.ones(2, 3, dtype=torch.long),
        torch.ones(2, 2),
        torch.zeros(2, 2),
        torch.tensor([0, 1]),
        ["a", "b"],
        torch.tensor([True, False]),
    )


def test_rollouts_to_same_device_is_the_same_batch_and_to_meta_moves_every_tensor():
    ro = batch()
    assert ro.to("cpu") is ro
    moved = ro.to("meta")  # a device every machine has: each tensor moves, the texts stay
    tensors = (
        moved.sequences,
        moved.attention_mask,
        moved.response_mask,
        moved.old_logp,
        moved.group_ids,
        moved.stopped,
    )
    assert all(t.device.type == "meta" for t in tensors)
    assert moved.texts == ["a", "b"] and moved.sequences.dtype == torch.long


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU machine's answers")
def test_resolve_device_on_a_cpu_machine():
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="runtime.device: cuda"):
        resolve_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU machine's answers")
def test_run_on_cuda_without_a_gpu_fails_in_one_line_before_recording_a_run(tmp_path, capsys):
    db = tmp_path / "runs.db"
    code = main(["run", "experiments/smoke.yaml", "--set", "runtime.device=cuda", "--db", f"sqlite:///{db}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "runtime.device: cuda" in err
    assert not db.exists()  # nothing recorded for a run that cannot start


def test_physical_gpu_maps_the_local_device_through_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert physical_gpu(torch.device("cuda", 1)) == "5"
    assert physical_gpu(torch.device("cuda", 0)) == "3"
    assert physical_gpu(torch.device("cpu")) is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert physical_gpu(torch.device("cuda", 2)) == "2"  # every GPU visible: the index is the device


def test_learner_bundle_holds_the_cores_learner_and_actor_take_turns_on_and_on_gpu_one_device():
    cfg = load_config("experiments/distributed.yaml", ["runtime.num_threads=3", "learner.rollout_threads=2"])
    assert learner_bundle(cfg, gpu=False) == {"CPU": 3}
    assert learner_bundle(cfg, gpu=True) == {"CPU": 3, "GPU": 1}
    wide = load_config("experiments/distributed.yaml", ["runtime.num_threads=1", "learner.rollout_threads=4"])
    assert learner_bundle(wide, gpu=False) == {"CPU": 4}
    default = load_config("experiments/smoke.yaml", ["runtime.num_threads=2"])
    assert rollout_threads(default) == 2 and learner_bundle(default, gpu=False) == {"CPU": 2}


def test_device_setting_is_validated_with_its_dotted_path():
    with pytest.raises(ConfigError, match="runtime.device"):
        load_config("experiments/smoke.yaml", ["runtime.device=tpu"])
    with pytest.raises(ConfigError, match="rollout.gpu_memory_utilization"):
        load_config("experiments/smoke.yaml", ["rollout.gpu_memory_utilization=1.5"])
