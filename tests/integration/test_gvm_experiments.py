"""experiments/gvm/*.yaml: the eight (each is base.yaml plus its own lines) differ only in algorithm and
allocator, and each runs (shrunk to smoke size) with its budget accounted: every rollout is probe or
training, telemetry rows sum to what was generated, and one run's telemetry and budget rows come back
through the store and `dibs export`."""

import csv
import io
import json
from pathlib import Path

import pytest

from dibs.platform.cli.main import main
from dibs.platform.core import metrics as M
from dibs.platform.core.config import load_config
from dibs.platform.runtime.loop import train
from dibs.platform.runtime.recording import MemoryRecorder, NullProgress

pytestmark = pytest.mark.integration

EXPERIMENTS = sorted(
    p for p in Path("experiments/gvm").glob("*.yaml") if p.stem != "base"
)  # base: shared part
M_PROMPTS, N, N_PROBE, STEPS = 4, 4, 2, 3


def shrink(tmp: Path) -> list[str]:
    """Smoke size: same code paths, seconds per run; one shared warm start (reuse) for all eight."""
    return [
        f"model.cache_dir={tmp}/models",
        "model.hidden_size=64",
        "model.num_layers=2",
        "model.num_heads=4",
        "model.num_kv_heads=2",
        "model.intermediate_size=128",
        "task.train_size=12",
        "task.test_size=16",
        "task.sft_size=500",
        "warm_start.steps=30",
        "warm_start.batch_size=32",
        f"train.steps={STEPS}",
        f"train.prompts_per_step={M_PROMPTS}",
        f"allocation.n_per_prompt={N}",
        f"allocation.n_probe={N_PROBE}",
        "allocation.reuse_probe_every=2",
        "eval.every=3",
        "eval.k=1",
        f"runtime.output_dir={tmp}/runs",
    ]


def test_the_eight_differ_only_in_algorithm_and_allocator():
    assert [p.stem for p in EXPERIMENTS] == [
        f"{a}-{b}" for a in ("grpo", "raftpp") for b in ("dapo", "gvm", "gvm_reuse", "uniform")
    ]
    configs = [load_config(p) for p in EXPERIMENTS]
    strip = [
        c.model_dump(exclude={"name": True, "algorithm": True, "allocation": {"allocator"}}) for c in configs
    ]
    assert all(s == strip[0] for s in strip)
    assert {(c.algorithm, c.allocation.allocator) for c in configs} == {
        (a, b) for a in ("grpo", "raftpp") for b in ("dapo", "gvm", "gvm_reuse", "uniform")
    }
    assert configs[0].allocation.n_per_prompt == 8 and configs[0].train.prompts_per_step == 16


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gvm-exp")
    out = {}
    for path in EXPERIMENTS:
        rec = MemoryRecorder()
        summary = train(
            load_config(path, shrink(tmp)), rec, NullProgress(), checkpoint_dir=str(tmp / path.stem)
        )
        out[path.stem] = (rec, summary, tmp / path.stem)
    return out


@pytest.mark.parametrize("name", [p.stem for p in EXPERIMENTS])
def test_each_runs_with_its_budget_accounted(runs, name):
    rec, summary, ckpt = runs[name]
    allocator = name.split("-", 1)[1]
    probe_total = 0
    for step in range(1, STEPS + 1):
        value = {name: v for (s, name), (v, _, _) in rec.rows.items() if s == step}.__getitem__
        assert value(M.BUDGET_ROLLOUTS) == value(M.BUDGET_PROBE_ROLLOUTS) + value(M.BUDGET_TRAIN_ROLLOUTS)
        assert 0 <= value(M.BUDGET_ACCEPTED) <= value(M.BUDGET_TRAIN_ROLLOUTS)
        assert 0 <= value(M.BUDGET_WASTED) <= value(M.BUDGET_TRAIN_ROLLOUTS)
        rows = rec.prompts[step]
        trained = sum(r.n_alloc for r in rows)  # kept and dropped groups both have rows
        assert value(M.STEP_ROLLOUTS) == trained + value(M.STEP_PROBE_ROLLOUTS)
        assert value(M.STEP_ACCEPTED) == sum(r.accepted for r in rows)
        probe_total += value(M.STEP_PROBE_ROLLOUTS)
        if allocator == "dapo":
            assert value(M.STEP_PROBE_ROLLOUTS) == 0 and 1 <= value(M.ALLOC_GEN_BATCHES) <= 3
            assert value(M.STEP_WASTED) >= value(M.ALLOC_DISCARDED_ROLLOUTS)
        else:  # the step's training budget is exactly m x n, however it is split
            assert trained == M_PROMPTS * N and len(rows) == M_PROMPTS
        if allocator == "gvm":
            assert value(M.STEP_PROBE_ROLLOUTS) == M_PROMPTS * N_PROBE and all(r.probed for r in rows)
        if allocator == "uniform":
            assert value(M.STEP_PROBE_ROLLOUTS) == 0 and not any(r.probed for r in rows)
    assert summary["rollouts_consumed"] == rec.at(STEPS, M.BUDGET_ROLLOUTS)[0]
    if allocator == "gvm_reuse":  # 12 prompts, 4 a step: steps 1-3 are first visits, all probed
        assert probe_total == STEPS * M_PROMPTS * N_PROBE
    state = json.loads((ckpt / f"step-{STEPS}" / "allocator.json").read_text())
    assert (len(state["estimates"]) == 12) if allocator == "gvm_reuse" else state == {}


def test_gvm_reuse_stops_probing_seen_prompts(tmp_path):
    """Second epoch: every prompt has been probed once, so with reuse_probe_every=2 nothing is probed."""
    cfg = load_config("experiments/gvm/grpo-gvm_reuse.yaml", shrink(tmp_path) + ["train.steps=6"])
    rec = MemoryRecorder()
    train(cfg, rec, NullProgress(), checkpoint_dir=str(tmp_path / "ckpt"))
    assert [rec.at(s, M.STEP_PROBE_ROLLOUTS)[0] for s in range(1, 7)] == [8, 8, 8, 0, 0, 0]


def test_telemetry_and_budget_through_the_store(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/dibs.db"
    args = [
        "run",
        "experiments/gvm/grpo-dapo.yaml",
        "--executor",
        "inline",
        "--db",
        url,
        "--name",
        "dapo-store",
    ]
    for item in shrink(tmp_path):
        args += ["--set", item]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["export", "dapo-store", "--format", "csv", "--table", "prompts", "--db", url]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {int(r["step"]) for r in rows} == {1, 2, 3} and all(r["g_hat"] == "" for r in rows)
    assert main(["export", "dapo-store", "--db", url]) == 0
    run = json.loads(capsys.readouterr().out)
    last = {m["name"]: m["value"] for m in run["metrics"] if m["step"] == STEPS}
    assert last[M.BUDGET_ROLLOUTS] == last[M.BUDGET_TRAIN_ROLLOUTS] == sum(int(r["n_alloc"]) for r in rows)
    assert len(run["prompt_stats"]) == len(rows)
