"""The experiment families written as a shared `base:` file plus the lines that differ load to exactly the
configs their former stand-alone files gave. The digests were computed from those files before they were
shrunk: sha256 of the validated config's non-default fields as sorted JSON (so a new config field with
a default leaves them alone, while any changed value in a file changes them)."""

import hashlib
import json
from pathlib import Path

import pytest

from dibs.platform.core.config import load_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DIGESTS = {
    "experiments/gvm/grpo-dapo.yaml": "b0888433cdb1a06a",
    "experiments/gvm/grpo-gvm.yaml": "03caa638a08fdfdd",
    "experiments/gvm/grpo-gvm_reuse.yaml": "a11a565fac657352",
    "experiments/gvm/grpo-uniform.yaml": "9dc87b111379cf6b",
    "experiments/gvm/raftpp-dapo.yaml": "03d2e57926284ec8",
    "experiments/gvm/raftpp-gvm.yaml": "2fbb5c626f48a2a4",
    "experiments/gvm/raftpp-gvm_reuse.yaml": "a344d3314bccbdcb",
    "experiments/gvm/raftpp-uniform.yaml": "48a6412aa3f6ec30",
    "experiments/paper/grpo-gvm-qwen2.5-math-1.5b.yaml": "81be7aac456ac919",
    "experiments/paper/grpo-uniform-qwen2.5-math-1.5b.yaml": "a412bb064cb00ecc",
    "experiments/paper/raftpp-gvm-qwen2.5-math-1.5b.yaml": "a6311524fac90846",
    "experiments/paper/raftpp-uniform-qwen2.5-math-1.5b.yaml": "3ab4cf7706793d88",
}


def digest(path: Path) -> str:
    explicit = load_config(path).model_dump(mode="json", exclude_defaults=True)
    return hashlib.sha256(json.dumps(explicit, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_shrunk_file_loads_to_its_former_config(name):
    path = ROOT / name
    assert "base" in path.read_text()  # it is the shrunk form that is checked
    assert digest(path) == DIGESTS[name], load_config(path).model_dump(mode="json", exclude_defaults=True)


def test_every_family_member_is_checked():
    members = {
        f"experiments/{d}/{p.name}"
        for d in ("gvm", "paper")
        for p in (ROOT / "experiments" / d).glob("*.yaml")
        if p.stem != "base"
    }
    assert members == set(DIGESTS)


def test_the_digest_sees_a_changed_value(tmp_path):
    """The check can fail: one leaf changed on top of a family member gives another digest."""
    name = "experiments/gvm/grpo-gvm.yaml"
    changed = tmp_path / "changed.yaml"
    changed.write_text(f"base: {ROOT / name}\ntrain.lr: 3.1e-5\n")
    same = tmp_path / "same.yaml"
    same.write_text(f"base: {ROOT / name}\ntrain.lr: 3.0e-5\n")
    assert digest(same) == DIGESTS[name] and digest(changed) != DIGESTS[name]


def test_the_zoo_files_run_each_allocator_as_its_study_arm():
    """experiments/zoo/<algorithm>-<allocator>.yaml is the study's file plus the arm's overrides
    (bench/allocators.py), so `dibs run` of one reproduces a study cell's setting."""
    arms = {
        "reinforce_ada": {"ada_group": 4},
        "greso": {},
        "knapsack": {},
        "variance": {},
        "probe_trains": {"n_probe": 4},
    }
    files = sorted((ROOT / "experiments" / "zoo").glob("*.yaml"))
    assert [p.stem for p in files] == sorted(f"{a}-{n}" for a in ("grpo", "raftpp") for n in arms)
    for path in files:
        algorithm, allocator = path.stem.split("-")
        cfg = load_config(path)
        study = load_config(ROOT / f"experiments/gvm_study/{algorithm}.yaml")
        want = study.allocation.model_copy(update={"allocator": allocator, **arms[allocator]})
        assert cfg.algorithm == algorithm and cfg.allocation == want
        assert cfg.model_copy(update={"name": study.name, "allocation": study.allocation}) == study
