"""`make bench`'s report: the markdown table from a results dict, and its copy into docs/results.md between
the perf markers (nothing else in the file changes)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from perf_report import END, START, markdown, quote_in_doc

pytestmark = pytest.mark.unit


def _learner(gflops: float, compile_: bool) -> dict:
    return {
        "learner_flops_per_s": gflops * 1e9,
        "update_seconds": 0.5,
        "formula": "6 x matmul_params x tokens",
        "matmul_params": 1000,
        "non_padding_tokens": 700,
        "padded_tokens": 900,
        "micro_batches": 3,
        "micro_batch_size": 64,
        "compile": compile_,
    }


RES = {
    "machine": {
        "date": "D",
        "cpu": "CPU",
        "cores": 2,
        "isa": ["avx2"],
        "torch": "2.13",
        "torch_threads": 2,
        "dibs_commit": "abc",
    },
    "workload": {"prompts": 32, "n_per_prompt": 8, "max_new_tokens": 64, "temperature": 1.0, "lr": 3e-5},
    "rollout_tokens_per_s": {"dibs": 15000.0, "dibs_hf_generate": 10000.0, "trl": 7500.0, "vllm": 3000.0},
    "rl_step_tokens_per_s": {"dibs": 6000.0, "trl": 4000.0},
    "rl_step_prompts_per_s": {"dibs": 30.0, "trl": 20.0},
    "gemm_peak_flops_per_s": 100e9,
    "gemm_peak_burst_flops_per_s": 125e9,
    "learner_gemm_peak": {
        "rounds": 12,
        "peak_seconds_per_size_and_round": 0.15,
        "gemm_peak_by_size": {"512": 90e9, "1024": 100e9},
    },
    "learner_eager": _learner(40.0, False),
    "learner_compiled": _learner(55.0, True),
    "learner": _learner(55.0, True),
    "learner_flops_per_s": 55e9,
    "learner_peak_fraction": 0.55,
    "ratios": {"rollout_dibs_vs_trl": 2.0, "rl_step_dibs_vs_trl": 1.5, "learner_vs_gemm_peak": 0.55},
    "scaling": {
        "base": {"train.prompts_per_step": 16},
        "axes": {
            "train.prompts_per_step": {
                "points": [
                    {
                        "value": 8,
                        "step_seconds": 1.0,
                        "stages": {
                            "generate": 0.5,
                            "score_and_rest": 0.1,
                            "update": 0.3,
                            "sync": 0.05,
                            "record": 0.05,
                            "step": 1.0,
                        },
                    }
                ],
                "exponent": 0.9,
                "stage_exponents": {"generate": 0.8, "update": 1.0},
            }
        },
    },
}


def test_markdown_states_the_ratios_and_learner_efficiency():
    md = markdown(RES)
    assert "| rollout tokens/s | 15,000 | 7,500 | 3,000 | 2.00x |" in md
    assert "| 6,000 | 4,000 | | 1.50x |" in md
    assert "| eager (default), micro-batch 64 | 1,000 | 700 / 900 in 3 | 0.500 | 40.0 | 40% | 32% |" in md
    assert (
        "| 55.0 | 55% | 44% |" in md
        and "(100.0 GFLOP/s over 12 rounds, each running `torch.mm` of 512/1024 squares" in md
    )
    assert "| prompts_per_step | 8: 1.000 | 0.90 | 0.80 | nan | 1.00 |" in md
    assert "generate 50%, score_and_rest 10%, update 30%, sync 5%, record 5%" in md


def test_quote_in_doc_replaces_only_the_marked_block(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text(f"intro\n{START}\nold table\n{END}\noutro\n")
    quote_in_doc(doc, "new table\n")
    assert doc.read_text() == f"intro\n{START}\nnew table\n{END}\noutro\n"
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    quote_in_doc(plain, "x\n")
    assert plain.read_text() == "no markers\n"
