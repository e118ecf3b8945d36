"""Checkpoints hold tensors and JSON only, and a resume takes the newest one that passes its checks: a
pickle payload planted in any file of a real checkpoint never runs and that step is skipped in one line, as
is a truncated one, one of another architecture or shape, and one outside the run's directory. A step
saved again replaces the old one only once the new one is in place."""

import pickle
import random
import shutil
from pathlib import Path

import pytest
import torch

from dibs.platform.allocation.factory import build_allocator
from dibs.platform.core.config import load_config
from dibs.platform.learn import checkpoint, checkpoint_check
from dibs.platform.learn.model import build_base_model, load
from dibs.platform.runtime.local import learner_kwargs
from dibs.platform.tasks.chain_sum import ALPHABET

pytestmark = pytest.mark.unit

RUN = "run-1"


class Payload:
    """Unpickling it creates the marker file: proof that a checkpoint ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def config(tmp: Path, *extra: str):
    return load_config(
        "experiments/smoke.yaml",
        [f"model.cache_dir={tmp}/models", f"runtime.output_dir={tmp}/runs", "train.kl_coef=0.01", *extra],
    )


def parts(cfg):
    policy, tokenizer = load(build_base_model(cfg.model, cfg.seed, ALPHABET))
    ref = load(build_base_model(cfg.model, cfg.seed, ALPHABET))[0].requires_grad_(False)
    learner = checkpoint_learner(cfg, policy, ref)
    return policy, tokenizer, ref, learner, build_allocator(cfg.allocation)


def checkpoint_learner(cfg, policy, ref):
    from dibs.platform.learn.learner import TorchLearner

    learner = TorchLearner(policy, **learner_kwargs(cfg, ref))
    for p in policy.parameters():  # one optimizer step, so AdamW has moments to save
        p.grad = torch.full_like(p, 0.01)
    learner.backend.opt.step()
    learner.backend.sched.step()
    return learner


def save_step(cfg, root: Path, step: int, policy, tokenizer, ref, learner, allocator) -> str:
    state = checkpoint.LoopState(
        step,
        random.Random(step).getstate(),
        [3, 1, 2],
        {"rollouts": 32.0 * step},
        {"eval/accuracy": 0.25},
        {"eval/accuracy": 0.5},
    )
    return checkpoint.save(
        root,
        step,
        policy=policy,
        tokenizer=tokenizer,
        learner=learner,
        allocator=allocator,
        state=state,
        ref_model=ref,
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A run directory with real checkpoints of steps 1 and 2 (the tiny smoke model, no training)."""
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = config(tmp)
    pieces = parts(cfg)
    root = tmp / "runs" / RUN / "checkpoints"
    for step in (1, 2):
        save_step(cfg, root, step, *pieces)
    return tmp, cfg


@pytest.fixture
def run(saved, tmp_path):
    """A fresh copy of the saved run to tamper with: (run dir, run config)."""
    tmp, cfg = saved
    shutil.copytree(tmp / "runs", tmp_path / "runs", symlinks=True)
    return tmp_path / "runs" / RUN, cfg


def pick(run_dir: Path, cfg, recorded=None):
    """`checkpoint_check.choose` over the run's checkpoints; returns (picked, skip messages)."""
    skipped: list[str] = []
    recorded = recorded if recorded is not None else checkpoint.on_disk(run_dir / "checkpoints")
    picked = checkpoint_check.choose(
        recorded, run_dir=run_dir, model=cfg.model, alphabet=ALPHABET, on_skip=skipped.append
    )
    return picked, skipped


def step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step}"


def test_a_checkpoint_is_safetensors_json_and_weights_only_pt(run):
    run_dir, cfg = run
    files = sorted(p.relative_to(step_dir(run_dir, 2)).as_posix() for p in step_dir(run_dir, 2).rglob("*"))
    assert files == [
        "allocator.json",
        "config.json",
        "generation_config.json",
        "learner.pt",
        "loop_state.json",
        "model.safetensors",
        "ref_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert (
        torch.serialization.get_unsafe_globals_in_checkpoint(str(step_dir(run_dir, 2) / "learner.pt")) == []
    )
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-1", "step-2"]  # no temp left
    assert pick(run_dir, cfg) == ((2, str(step_dir(run_dir, 2))), [])


def test_load_restores_loop_state_optimizer_and_reference(run):
    run_dir, _cfg = run
    _policy, _, ref, learner, allocator = parts(config(run_dir.parent.parent))
    saved_opt = learner.backend.opt.state_dict()
    state = checkpoint.load(step_dir(run_dir, 2), learner=learner, allocator=allocator, ref_model=ref)
    assert state.step == 2 and state.cursor == [3, 1, 2] and state.budget == {"rollouts": 64.0}
    assert checkpoint.restore_rng(state).random() == random.Random(2).random()
    exp_avg = learner.backend.opt.state_dict()["state"][0]["exp_avg"]
    torch.testing.assert_close(exp_avg, saved_opt["state"][0]["exp_avg"])
    assert learner.backend.sched.state_dict()["last_epoch"] == 1


@pytest.mark.parametrize("form", ["pickle", "torch.save"])
def test_a_pickle_payload_in_any_file_never_runs_and_skips_the_step(saved, tmp_path, form):
    tmp, cfg = saved
    marker = tmp_path / "pwned"
    names = sorted(
        p.relative_to(tmp / "runs" / RUN / "checkpoints" / "step-2")
        for p in (tmp / "runs" / RUN / "checkpoints" / "step-2").rglob("*")
        if p.is_file()
    )
    assert len(names) == 9
    for name in names:
        case = tmp_path / name.name
        shutil.copytree(tmp / "runs", case / "runs")
        run_dir = case / "runs" / RUN
        target = step_dir(run_dir, 2) / name
        if form == "pickle":
            target.write_bytes(pickle.dumps(Payload(marker), protocol=2))
        else:
            torch.save(Payload(marker), target)
        picked, skipped = pick(run_dir, cfg)
        assert picked == (1, str(step_dir(run_dir, 1))), name
        assert len(skipped) == 1 and skipped[0].startswith(
            f"checkpoint of step 2 skipped ({step_dir(run_dir, 2)}): "
        )
        assert "\n" not in skipped[0] and name.name in skipped[0], skipped[0]
        _load_everything(step_dir(run_dir, 2), cfg, run_dir)  # loading it anyway refuses, runs nothing
        assert not marker.exists(), name
    assert not marker.exists()


def _load_everything(path: Path, cfg, run_dir: Path) -> None:
    """Every loader a resume uses, on a tampered checkpoint: each raises, none unpickles the payload."""
    _, _, ref, learner, allocator = parts(config(run_dir.parent.parent))
    for loader in (
        lambda: checkpoint.load(path, learner=learner, allocator=allocator, ref_model=ref),
        lambda: load(path),
    ):
        try:
            loader()
        except Exception:  # noqa: BLE001, S110 - refusing is fine here; running the payload is not
            pass


def test_pickled_weights_are_refused_even_without_safetensors(run, tmp_path):
    run_dir, cfg = run
    marker = tmp_path / "pwned"
    step = step_dir(run_dir, 2)
    (step / "model.safetensors").unlink()
    (step / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    picked, skipped = pick(run_dir, cfg)
    assert picked[0] == 1 and skipped == [f"checkpoint of step 2 skipped ({step}): missing model.safetensors"]
    with pytest.raises(OSError):
        load(step)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name", ["model.safetensors", "learner.pt", "loop_state.json", "ref_model.safetensors"]
)
def test_a_truncated_newest_checkpoint_falls_back_to_the_previous(run, name):
    run_dir, cfg = run
    f = step_dir(run_dir, 2) / name
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    picked, skipped = pick(run_dir, cfg)
    assert picked == (1, str(step_dir(run_dir, 1)))
    assert len(skipped) == 1 and skipped[0].startswith(
        f"checkpoint of step 2 skipped ({step_dir(run_dir, 2)}): {name}: "
    )


def test_none_usable_gives_none(run):
    run_dir, cfg = run
    for step in (1, 2):
        (step_dir(run_dir, step) / "learner.pt").unlink()
    picked, skipped = pick(run_dir, cfg)
    assert picked is None and [s.split(": ", 1)[1] for s in skipped] == ["no optimizer state (*.pt)"] * 2


def test_a_checkpoint_of_another_architecture_is_refused(run):
    run_dir, _ = run
    wider = config(run_dir.parent.parent, "model.hidden_size=128", "model.intermediate_size=256")
    picked, skipped = pick(run_dir, wider)
    assert picked is None
    assert skipped[0] == (
        f"checkpoint of step 2 skipped ({step_dir(run_dir, 2)}): model config differs from the "
        f"run's: hidden_size 64 (run: 128), intermediate_size 128 (run: 256)"
    )


def test_weights_of_another_shape_are_refused(run):
    from safetensors.torch import load_file, save_file

    run_dir, cfg = run
    f = step_dir(run_dir, 2) / "model.safetensors"
    tensors = load_file(f)
    tensors["model.norm.weight"] = torch.ones(32)
    save_file(tensors, f, metadata={"format": "pt"})
    picked, skipped = pick(run_dir, cfg)
    assert picked[0] == 1
    assert skipped == [
        (
            f"checkpoint of step 2 skipped ({step_dir(run_dir, 2)}): model.safetensors: wrong shape: "
            f"model.norm.weight [32] (run: [64])"
        )
    ]


def test_a_checkpoint_outside_the_run_directory_is_refused(run, tmp_path):
    run_dir, cfg = run
    elsewhere = tmp_path / "elsewhere" / "step-3"
    shutil.copytree(step_dir(run_dir, 2), elsewhere)
    picked, skipped = pick(run_dir, cfg, [(2, str(step_dir(run_dir, 2))), (3, str(elsewhere))])
    assert picked[0] == 2
    assert skipped == [
        (
            f"checkpoint of step 3 skipped ({elsewhere}): {elsewhere} is outside the run's "
            f"directory {run_dir.resolve()}"
        )
    ]


def test_a_symlink_out_of_the_run_directory_is_refused(run, tmp_path):
    run_dir, cfg = run
    outside = tmp_path / "outside"
    shutil.copytree(step_dir(run_dir, 2), outside)
    (run_dir / "checkpoints" / "step-3").symlink_to(outside)  # the whole step
    shutil.move(step_dir(run_dir, 2) / "learner.pt", outside / "learner-2.pt")
    (step_dir(run_dir, 2) / "learner.pt").symlink_to(outside / "learner-2.pt")  # one file of a step
    picked, skipped = pick(run_dir, cfg)
    assert picked[0] == 1
    assert [s.split("): ", 1)[1].split(" is outside")[0] for s in skipped] == [
        str(run_dir / "checkpoints" / "step-3"),
        str(step_dir(run_dir, 2) / "learner.pt"),
    ]


def test_a_step_saved_again_is_replaced_only_once_the_new_one_is_in_place(run):
    run_dir, cfg = run
    policy, tokenizer, ref, learner, allocator = parts(config(run_dir.parent.parent))
    root = run_dir / "checkpoints"
    before = (step_dir(run_dir, 2) / "loop_state.json").read_text()

    def broken(directory):
        raise OSError("disk full")

    learner.save_training_state = broken  # a save that dies midway leaves the old step-2 as it was
    with pytest.raises(OSError, match="disk full"):
        save_step(cfg, root, 2, policy, tokenizer, ref, learner, allocator)
    assert (step_dir(run_dir, 2) / "loop_state.json").read_text() == before
    assert sorted(p.name for p in root.iterdir()) == [".step-2.tmp", "step-1", "step-2"]
    assert pick(run_dir, cfg)[0] == (2, str(step_dir(run_dir, 2)))

    del learner.save_training_state
    allocator_state = {"seen": 7}
    allocator.state_dict = lambda: allocator_state
    save_step(cfg, root, 2, policy, tokenizer, ref, learner, allocator)
    assert checkpoint.read_json(step_dir(run_dir, 2) / "allocator.json") == allocator_state
    assert sorted(p.name for p in root.iterdir()) == ["step-1", "step-2"]  # no temp or old copy left
    assert pick(run_dir, cfg)[0] == (2, str(step_dir(run_dir, 2)))


def test_a_symlinked_directory_inside_a_checkpoint_is_refused(run):
    run_dir, cfg = run
    (step_dir(run_dir, 2) / "deepspeed").symlink_to(
        step_dir(run_dir, 1)
    )  # inside the run, but never saved so
    picked, skipped = pick(run_dir, cfg)
    assert picked[0] == 1
    assert skipped == [
        (
            f"checkpoint of step 2 skipped ({step_dir(run_dir, 2)}): "
            f"{step_dir(run_dir, 2) / 'deepspeed'} is a symlinked directory"
        )
    ]
