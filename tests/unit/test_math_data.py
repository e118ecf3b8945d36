"""Math data: training files in JSONL / JSON / Parquet, the template, the five evaluation sets'
own formats, the `task.kind: math` config and its paths, and the paper recipes."""

import json
from pathlib import Path

import pytest

from dibs.platform.core.config import ConfigError, load_config, missing_paths, validate_dict
from dibs.platform.tasks.math_data import (
    DATA_DIR_ENV,
    SUITES,
    default_data_dir,
    load_eval_set,
    load_train_file,
    packaged_data_dir,
    render,
    split_train_test,
)
from dibs.platform.tasks.registry import build_task

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "math_train.jsonl"
ROWS = [
    {"problem": "1+1?", "solution": "so \\boxed{2}", "answer": "2"},
    {"question": "2+2?", "solution": "we get \\boxed{\\frac{8}{2}}"},  # NuminaMath: no answer column
    {"problem": "no gold", "solution": "none"},
]  # skipped


def test_template_is_qwen25_math_cot():
    text = render("What is $1+1$?", "qwen25-math-cot")
    assert text == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}."
        "<|im_end|>\n<|im_start|>user\nWhat is $1+1$?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render("x", "plain") == "x"


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_train_file_formats(tmp_path, suffix):
    path = tmp_path / f"train{suffix}"
    if suffix == ".parquet":
        pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
        pq.write_table(
            pa.Table.from_pylist(
                [
                    r
                    | {"answer": r.get("answer"), "problem": r.get("problem"), "question": r.get("question")}
                    for r in ROWS
                ]
            ),
            path,
        )
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS))
    else:
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    problems = load_train_file(path, "plain")
    assert [(p.prompt, p.answer) for p in problems] == [("1+1?", "2"), ("2+2?", "\\frac{8}{2}")]


def test_train_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "a", "answer": "1"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_train_file(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"problem": "a"}\n')
    with pytest.raises(ValueError, match="no row has a problem and a gold answer"):
        load_train_file(empty)


def test_split_is_seeded_and_disjoint():
    problems = load_train_file(FIXTURE)
    train, test = split_train_test(problems, test_size=4, seed=0)
    assert len(problems) == 22 and len(test) == 4 and len(train) == 18
    assert not {p.prompt for p in test} & {p.prompt for p in train}
    assert split_train_test(problems, test_size=4, seed=0) == (train, test)
    with pytest.raises(ValueError, match="test_size"):
        split_train_test(problems, test_size=22, seed=0)


@pytest.mark.parametrize(
    "name, rows, gold",
    [
        ("math500", [{"problem": "p", "answer": "\\frac{1}{2}", "solution": "s"}], "\\frac{1}{2}"),
        ("minerva_math", [{"problem": "p", "answer": "so $s=\\boxed{1.6} \\mathrm{~cm}$", "idx": 0}], "1.6"),
        (
            "olympiad_bench",
            [{"problem": "p", "context": None, "answer": ["$\\frac{1}{3},-2,5$"]}],
            "\\frac{1}{3},-2,5",
        ),
        (
            "olympiad_bench",
            [{"problem": "p", "answer": ["$(1,8)$", "$(2,7)$"]}],
            "(1,8), (2,7)",
        ),  # several answers
        ("aime24", [{"problem": "p", "answer": "025", "solution": "s"}], "025"),
        ("amc23", [{"problem": "p", "answer": 27.0}], "27"),  # floats
    ],
)
def test_eval_set_formats(tmp_path, name, rows, gold):
    (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (p,) = load_eval_set(name, tmp_path)
    assert p.answer == gold and p.problem == "p" and p.prompt.endswith("<|im_start|>assistant\n")


def test_the_shipped_sets_load_with_their_problem_counts(monkeypatch):
    """The five sets ship inside the package (counted by hand: lines of each file) and are the default."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert default_data_dir() == packaged_data_dir() == REPO / "platform" / "tasks" / "data" / "math_eval"
    sizes = {name: len(load_eval_set(name)) for name in SUITES["math5"]}
    assert sizes == {"math500": 500, "minerva_math": 272, "olympiad_bench": 675, "aime24": 30, "amc23": 40}
    assert len(load_eval_set("math500", limit=3)) == 3
    (first,) = load_eval_set("amc23", limit=1)
    assert first.answer == "27"  # 27.0 in the file


def test_the_data_folder_can_be_moved(monkeypatch):
    """$DIBS_MATH_EVAL_DIR, then an explicit folder (eval.data_dir, --data-dir), win over the shipped sets."""
    trimmed = REPO / "tests" / "fixtures" / "math_eval"  # 20 rows of each set but MATH500
    monkeypatch.setenv(DATA_DIR_ENV, str(trimmed))
    assert default_data_dir() == trimmed and len(load_eval_set("aime24")) == 20
    assert len(load_eval_set("aime24", packaged_data_dir())) == 30


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "{path}: no such file (the aime24 evaluation set)"),
        ("", "{path}: no problems in the aime24 evaluation set"),
        (
            '{"problem": "p", "answer": "1"}\n{"problem": "q", "answer": ',
            "{path}:2: not a JSON object: Expecting value",
        ),
        (
            '{"problem": "p", "answer": "1"}\n{"question": "q", "answer": "2"}\n',
            "{path}: row 2: no 'problem' field",
        ),
        ("[1, 2]\n", "{path}: row 1: expected a JSON object, got list"),
        (
            '{"problem": "p", "answer": [1]}\n',
            "{path}: row 1: not in the aime24 format (gold answer must be a string or a number, got list)",
        ),
        ('{"problem": "", "answer": "1"}\n', "{path}: row 1: the problem is not a non-empty string"),
        (
            b"\xff\xfe",
            "{path}: cannot read: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
        ),
    ],
)
def test_a_missing_or_malformed_set_names_the_file(tmp_path, text, message):
    path = tmp_path / "aime24.jsonl"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_eval_set("aime24", tmp_path)
    assert str(e.value) == message.format(path=path)


def test_math_task_config_and_build():
    cfg = validate_dict(
        {"task": {"kind": "math", "train_file": str(FIXTURE), "test_size": 4}, "warm_start": {"steps": 0}}
    )
    data = build_task(cfg.task, seed=0)
    assert data.sft == [] and len(data.test) == 4 and len(data.train) == 18
    assert all(p.prompt.startswith("<|im_start|>system") for p in data.train)


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"task": {"kind": "math"}, "warm_start": {"steps": 0}},
            "task: Value error, kind: math needs train_file",
        ),
        ({"task": {"kind": "math", "train_file": "x.jsonl"}}, "warm_start.steps must be 0 (got 450)"),
        (
            {"task": {"kind": "Math!"}},
            "task.kind: String should match pattern",
        ),  # which kinds exist: the registry
        ({"eval": {"suite": "math6"}}, "eval.suite"),
    ],
)
def test_math_config_errors_are_one_line(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        validate_dict(data)
    assert "\n" not in str(e.value)


def test_missing_paths_are_named_by_key():
    cfg = validate_dict(
        {
            "task": {"kind": "math", "train_file": "/nonexistent/train.parquet"},
            "model": {"path": str(REPO)},
            "eval": {"data_dir": "/nonexistent/eval"},
            "warm_start": {"steps": 0},
        }
    )
    assert missing_paths(cfg) == [
        ("task.train_file", "/nonexistent/train.parquet"),
        ("eval.data_dir", "/nonexistent/eval"),
    ]
    assert missing_paths(validate_dict({})) == []


@pytest.mark.parametrize(
    "path", sorted((REPO / "experiments" / "paper").glob("*-*.yaml")), ids=lambda p: p.name
)
def test_paper_recipes_validate_without_their_paths(path):
    cfg = load_config(path)
    assert cfg.task.kind == "math" and cfg.rollout.engine == "vllm" and cfg.learner.backend == "deepspeed"
    assert cfg.train.lr == 1e-6 and cfg.train.weight_decay == 0.01 and cfg.train.prompts_per_step == 1024
    assert cfg.rollout.max_new_tokens == 3072 and cfg.eval.k == 8 and cfg.eval.suite == "math5"
    assert missing_paths(cfg)  # /models/... and /data/... do not exist here: validate passes regardless


def test_there_are_four_paper_recipes():
    names = sorted(p.name for p in (REPO / "experiments" / "paper").glob("*.yaml"))
    assert names == ["base.yaml"] + [
        f"{a}-{b}-qwen2.5-math-1.5b.yaml" for a in ("grpo", "raftpp") for b in ("gvm", "uniform")
    ]  # base.yaml: what the four share


def test_dibs_validate_passes_every_paper_recipe(capsys):
    from dibs.platform.cli.main import main

    for path in sorted((REPO / "experiments" / "paper").glob("*-*.yaml")):
        assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.count(": ok (") == 4
