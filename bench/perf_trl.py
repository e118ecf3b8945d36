"""TRL 1.16 `GRPOTrainer` on CPU, configured like a dibs GRPO run, for a side-by-side throughput benchmark.

Imported by another bench script (bench/ on sys.path); importing it does nothing but define functions, and TRL
itself is imported only when a function runs, so that the dibs side of a benchmark never pays for it.

    trl_generation(...)  TRL's own generation path (`trainer._generate`, transformers `generate`, no vLLM)
    trl_rl_steps(...)    whole GRPO steps through `trainer.train()`: generate + score + update

Settings mirror dibs (see `_config`): one optimizer step per generation batch of prompts_per_step * n
completions, token-mean ("dapo") loss over the whole batch, no reference model, plain fp32 AdamW, constant lr.
Differences that cannot be matched are TRL's by design and are listed in `_config`'s docstring.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import tempfile
import time
import warnings

from transformers import TrainerCallback


def _config(
    *,
    n: int,
    prompts_per_step: int,
    max_new_tokens: int,
    temperature: float,
    lr: float,
    weight_decay: float,
    grad_clip: float,
    adam_eps: float,
    clip_eps: float,
    max_steps: int,
    seed: int,
    output_dir: str,
):
    """The GRPOConfig of both measurements. What cannot be matched to dibs is left as TRL does it:
    - TRL generates with the policy in train() mode (dibs: eval()); the demo model has no dropout.
    - On-policy, TRL skips the old-logprob pass (ratio = exp(logp - logp.detach())); dibs instead keeps
      the sampling logprobs from its generation pass. TRL's loss pass also computes token entropies.
    - transformers' Trainer exempts biases and norm weights from weight decay; dibs decays them all."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=output_dir,
        # One optimizer step per generation batch: the whole batch (prompts_per_step groups of n) is one
        # micro-batch: steps_per_generation = gradient_accumulation_steps = 1, generation_batch_size = B.
        per_device_train_batch_size=prompts_per_step * n,
        gradient_accumulation_steps=1,
        num_iterations=1,
        num_generations=n,
        max_steps=max_steps,
        shuffle_dataset=False,  # rows in the caller's order, so every run sees the same prompts
        # Sampling as in dibs' engines: plain temperature sampling; top_k=0 is TRL's (and generate's) "off".
        max_completion_length=max_new_tokens,
        temperature=temperature,
        top_p=1.0,
        top_k=0,
        # The loss dibs' GRPO uses: no KL (so no reference model is built), PPO clip at clip_eps both sides,
        # token-mean over all completion tokens of the batch ("dapo"), advantages scaled by the group's std.
        beta=0.0,
        epsilon=clip_eps,
        loss_type="dapo",
        scale_rewards="group",
        optim="adamw_torch",
        learning_rate=lr,
        weight_decay=weight_decay,
        adam_epsilon=adam_eps,
        max_grad_norm=grad_clip,
        lr_scheduler_type="constant",
        warmup_steps=0,
        # TRL defaults gradient_checkpointing=True and bf16=True; dibs trains fp32 without checkpointing.
        # transformers 5 renamed the first to activation_checkpointing, which overrides the old name when set.
        activation_checkpointing=False,
        bf16=False,
        fp16=False,
        use_cpu=True,
        dataloader_num_workers=0,
        report_to="none",
        save_strategy="no",
        logging_steps=1,  # TRL's per-step metrics aggregation stays in (it is part of its cost) ...
        disable_tqdm=True,  # ... but its console printing is removed in `_trainer`.
        seed=seed,
    )


@contextlib.contextmanager
def _quiet():
    """Hide transformers' FutureWarnings about TRL 1.16 reading the renamed gradient_checkpointing
    attributes (at every generate); a filter only decides display, so the timed work is unchanged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _trl_reward(reward_fn, eos_id: int, record=None):
    """dibs' reward(text, answer, *, stopped) as a TRL reward function. TRL decodes `completions` with
    skip_special_tokens=True, so the texts carry no EOS, as in dibs; `stopped` = the completion ends with EOS
    (TRL cuts completion_ids right after the first EOS). `record` gets each call's completion-token count."""

    def reward(completions, completion_ids, answer, **kw) -> list[float]:
        if record is not None:
            record(sum(len(ids) for ids in completion_ids))
        return [
            float(reward_fn(text, int(a), stopped=bool(ids) and ids[-1] == eos_id))
            for text, ids, a in zip(completions, completion_ids, answer, strict=True)
        ]

    return reward


def _trainer(
    policy,
    tokenizer,
    problems: list[tuple[str, int]],
    reward,
    *,
    steps: int,
    prompts_per_step: int,
    callbacks=(),
    **cfg,
):
    """A GRPOTrainer on deep copies of policy and tokenizer (TRL writes pad ids into the model's
    configs), with exactly steps * prompts_per_step rows: each optimizer step draws prompts_per_step."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOTrainer

    rows = [problems[i % len(problems)] for i in range(steps * prompts_per_step)]
    dataset = Dataset.from_dict({"prompt": [p for p, _ in rows], "answer": [a for _, a in rows]})
    args = _config(prompts_per_step=prompts_per_step, max_steps=steps, output_dir=tempfile.mkdtemp(), **cfg)
    trainer = GRPOTrainer(
        model=copy.deepcopy(policy),
        reward_funcs=reward,
        args=args,
        train_dataset=dataset,
        processing_class=copy.deepcopy(tokenizer),
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # prints each step's log dict; the logs are still built
    _check_tokenization(trainer, tokenizer, [p for p, _ in rows[:prompts_per_step]])
    return trainer


def _check_tokenization(trainer, tokenizer, prompts: list[str]) -> None:
    """The prompts already start with the BOS text, and dibs encodes them with add_special_tokens=False;
    TRL calls the tokenizer with its defaults (add_special_tokens=True). The same ids for the dibs tokenizer,
    whose post-processor adds no special tokens (checked: no second BOS); a tokenizer that did add one
    would need TRL's `_tokenize_prompts` changed, so fail loudly rather than benchmark something else."""
    trl_ids, _, _ = trainer._tokenize_prompts(prompts)
    dibs_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    if [list(ids) for ids in trl_ids] != dibs_ids:
        raise ValueError(f"TRL tokenizes the prompts differently from dibs: {trl_ids[0]} vs {dibs_ids[0]}")


def _time_generate(trainer, prompts: list[str], reps: int) -> tuple[int, float]:
    """(completion tokens, seconds) of `reps` timed `trainer._generate` calls after one untimed warm-up call,
    which keeps first-call allocations and lazy initialisation out of the timing."""
    trainer._generate(prompts)
    tokens, seconds = 0, 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        completion_ids = trainer._generate(prompts)[1]  # (prompt_ids, completion_ids, tool_mask, ...)
        seconds += time.perf_counter() - t0
        tokens += sum(len(ids) for ids in completion_ids)
    return tokens, seconds


def trl_generation(
    policy,
    tokenizer,
    prompts: list[str],
    *,
    n: int,
    max_new_tokens: int,
    temperature: float,
    reps: int,
    seed: int = 0,
) -> dict:
    """TRL GRPOTrainer's own generation path (trainer._generate, the transformers-generate branch, no
    vLLM) on `prompts`, each repeated n times (as TRL's RepeatSampler does), one warm-up call, then `reps`
    timed calls. Returns {"tokens": total completion tokens generated in the timed calls (completion_ids
    lengths, EOS included), "seconds": total timed wall, "tokens_per_s": tokens/seconds, "calls": reps}."""
    # The trainer of trl_rl_steps (one step of len(prompts) prompts); its reward and optimizer stay unused.
    with _quiet():
        unused = _trl_reward(lambda *a, **k: 0.0, tokenizer.eos_token_id)
        trainer = _trainer(
            policy,
            tokenizer,
            [(p, 0) for p in prompts],
            unused,
            steps=1,
            prompts_per_step=len(prompts),
            n=n,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            lr=0.0,
            weight_decay=0.0,
            grad_clip=1.0,
            adam_eps=1e-8,
            clip_eps=0.2,
            seed=seed,
        )
        try:
            # Inside train(), Trainer.training_step puts the model in train() before TRL generates.
            trainer.model.train()
            repeated = [p for p in prompts for _ in range(n)]  # as RepeatSampler: n adjacent copies
            tokens, seconds = _time_generate(trainer, repeated, reps)
        finally:
            shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "calls": reps}


class _StepRecorder(TrainerCallback):
    """Wall time of each optimizer step (on_step_begin .. on_step_end encloses TRL's generation, scoring,
    loss, backward, clipping and optimizer step, not the logging that follows on_step_end), and the
    completion tokens scored inside it. Exactly one reward call per step is asserted: that is what makes the
    per-step token counts line up with the per-step times."""

    def __init__(self):
        self.seconds: list[float] = []
        self.tokens: list[int] = []
        self._t0 = None
        self._calls: list[int] = []

    def record(self, tokens: int) -> None:
        if self._t0 is None:
            raise RuntimeError("TRL scored completions outside an optimizer step")
        self._calls.append(tokens)

    def on_step_begin(self, args, state, control, **kwargs):
        self._calls = []
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._t0)
        self._t0 = None
        if len(self._calls) != 1:
            raise RuntimeError(f"expected one generation per optimizer step, saw {len(self._calls)}")
        self.tokens.append(self._calls[0])


def trl_rl_steps(
    policy,
    tokenizer,
    problems: list[tuple[str, int]],
    reward_fn,
    *,
    n: int,
    prompts_per_step: int,
    max_new_tokens: int,
    temperature: float,
    lr: float,
    weight_decay: float,
    grad_clip: float,
    adam_eps: float,
    clip_eps: float,
    warmup: int,
    steps: int,
    seed: int = 0,
) -> dict:
    """Whole GRPO steps through GRPOTrainer.train(): generate + score + update, `warmup` untimed optimizer
    steps then `steps` timed ones (each optimizer step timed by a TrainerCallback, on_step_begin to
    on_step_end, perf_counter). Returns {"step_seconds": [per timed step], "completion_tokens": [per timed
    step, summed over the step's n*prompts_per_step completions], "prompts_per_step": ..., "n": n,
    "prompts_per_s": prompts_per_step*steps/sum(step_seconds),
    "tokens_per_s": sum(tokens)/sum(step_seconds)}."""
    recorder = _StepRecorder()
    reward = _trl_reward(reward_fn, tokenizer.eos_token_id, recorder.record)
    with _quiet():
        trainer = _trainer(
            policy,
            tokenizer,
            problems,
            reward,
            steps=warmup + steps,
            prompts_per_step=prompts_per_step,
            callbacks=[recorder],
            n=n,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            lr=lr,
            weight_decay=weight_decay,
            grad_clip=grad_clip,
            adam_eps=adam_eps,
            clip_eps=clip_eps,
            seed=seed,
        )
        try:
            trainer.train()
        finally:
            shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
    if len(recorder.seconds) != warmup + steps:
        raise RuntimeError(f"TRL ran {len(recorder.seconds)} optimizer steps, expected {warmup + steps}")
    seconds, tokens = recorder.seconds[warmup:], recorder.tokens[warmup:]
    return {
        "step_seconds": seconds,
        "completion_tokens": tokens,
        "prompts_per_step": prompts_per_step,
        "n": n,
        "prompts_per_s": prompts_per_step * steps / sum(seconds),
        "tokens_per_s": sum(tokens) / sum(seconds),
    }
