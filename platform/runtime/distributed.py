"""The distributed runtime: Ray Train drives `learner.num_workers` learner ranks (torch or
DeepSpeed, data-parallel over prompt groups), each with a rollout actor on its own node.

Every rank runs the one training loop (loop.py) on the same data and seeds. Its engine is a
`ShardedEngine`: rank r sends prompts r, r+W, r+2W, ... to its own rollout actor and the shares are
all-gathered, so every rank holds the whole batch (scores, GRPO groups and GVM allocations agree without
further messages) while generation is split W ways. Its learner trains on rank r's share of the prompt
groups and reduces gradients over ranks (learner.py, deepspeed_learner.py). After each update every rank
pushes the new weights to its own actor; the engine is never restarted.

Colocation: each learner's placement-group bundle reserves the CPUs of the learner and its rollout actor
and, on GPU, one whole device. The two take turns (the actor generates while the learner waits for the
batch; the learner updates while the actor waits for weights), so they share cores: the bundle holds
max(`runtime.num_threads`, `learner.rollout_threads`) CPUs, as verl's hybrid engine time-shares. The actor is
pinned to the learner's node (NodeAffinitySchedulingStrategy, not soft) and draws on that reservation
(num_cpus 0, num_gpus 0), so a node never admits a learner whose actor cannot run beside it. On GPU the
actor is given the learner's own device (its CUDA_VISIBLE_DEVICES, set before CUDA starts in the actor)
and the device is shared by memory: vLLM takes `rollout.gpu_memory_utilization` of it and sleeps (KV
cache freed, weights offloaded) while the learner updates. The device is split this way rather than by
Ray's fractional `num_gpus` because Ray packs fractional requests onto the first GPU with room: on a
node of several GPUs two learners asking 0.5 each would share GPU 0 while their actors took GPU 1.
Fault tolerance: checkpoints every `runtime.checkpoint_every` steps (checkpoint.py); when a learner
worker dies, Ray Train (`runtime.max_failures`) restarts the group and every rank resumes from the newest
complete checkpoint; metric rows are idempotent, so each step is stored once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from dibs.platform.core.config import ExperimentConfig
from dibs.platform.core.host import configure_process
from dibs.platform.core.parallel import DataParallel
from dibs.platform.learn import checkpoint, checkpoint_check
from dibs.platform.learn.base import Learner
from dibs.platform.learn.learner import TorchLearner
from dibs.platform.learn.model import load, resolve_device
from dibs.platform.learn.warm_start import Progress, prepare
from dibs.platform.rollout.base import Rollouts, SamplingSpec, merge_rollouts
from dibs.platform.rollout.torch_engine import local_engine
from dibs.platform.runtime.base import Prepared, ProgressQueue, RunPayload
from dibs.platform.runtime.local import learner_kwargs
from dibs.platform.runtime.loop import train
from dibs.platform.runtime.recording import NullProgress
from dibs.platform.tasks.base import TaskData
from dibs.platform.tasks.registry import build_task, make_task

WARM_START_DIR = "warm-start"  # under the run's output dir: rank 0's warm start, loaded by the others
SUMMARY_FILE = "summary.json"


class RolloutWorker:
    """A rollout actor: `rollout.engine` (the decode loop, transformers or vLLM) on its own copy of the
    weights."""

    def __init__(
        self,
        model_dir: str,
        threads: int,
        engine: str,
        *,
        gpu: str | None = None,
        gpu_memory_utilization: float = 0.3,
        keep_freed_memory: bool = True,
    ):
        configure_process(threads, keep_freed_memory)
        if gpu is not None:  # the learner's device (module docstring); CUDA has not started in this process
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        if engine == "vllm":
            from dibs.platform.rollout.vllm_engine import VLLMEngine

            self.engine = VLLMEngine(
                model_dir, sleep_mode=gpu is not None, gpu_memory_utilization=gpu_memory_utilization
            )
        else:
            policy, tokenizer = load(Path(model_dir))
            self.engine = local_engine(engine, policy.to("cuda" if gpu is not None else "cpu"), tokenizer)

    def generate(self, prompts: list[str], counts: list[int], spec: SamplingSpec, seed: int) -> Rollouts:
        return self.engine.generate(prompts, counts, spec, seed=seed)

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> bool:
        self.engine.load_weights(state_dict)
        return True

    def sleep(self) -> bool:
        self.engine.sleep()
        return True

    def wake_up(self) -> bool:
        self.engine.wake_up()
        return True

    def pid(self) -> int:
        return os.getpid()


class ShardedEngine:
    """The RolloutEngine one rank sees (see the module docstring). Collective: every rank calls it with
    the same arguments."""

    def __init__(self, actor, dp: DataParallel, tokenizer):
        self.actor, self.dp, self.tok = actor, dp, tokenizer

    def generate(self, prompts: list[str], counts: list[int], spec: SamplingSpec, *, seed: int) -> Rollouts:
        import ray

        if sum(counts) == 0:
            raise ValueError("generate: every prompt has a count of 0")
        mine = [i for i in range(len(prompts)) if i % self.dp.world == self.dp.rank and counts[i] > 0]
        local = None
        if mine:  # each rank its own sample stream: the seed with the rank in its high bits
            local = ray.get(
                self.actor.generate.remote(
                    [prompts[i] for i in mine], [counts[i] for i in mine], spec, seed + (self.dp.rank << 40)
                )
            )
        parts = [(idx, ro) for idx, ro in self.dp.all_gather((mine, local)) if ro is not None]
        group_ids = torch.cat([torch.tensor(idx, dtype=torch.long)[ro.group_ids] for idx, ro in parts])
        return merge_rollouts([ro for _, ro in parts], group_ids, pad_id=self.tok.pad_token_id)

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        import ray

        ray.get(self.actor.load_weights.remote({k: v.cpu() for k, v in state_dict.items()}))

    def sleep(self) -> None:
        import ray

        ray.get(self.actor.sleep.remote())

    def wake_up(self) -> None:
        import ray

        ray.get(self.actor.wake_up.remote())


class DistributedRuntime:
    """The `Runtime` (runtime/base.py) of one learner rank: its engine is sharded over the ranks' rollout
    actors, its learner reduces gradients over the ranks."""

    def __init__(self, dp: DataParallel, out_dir: Path, device: torch.device):
        self.dp, self.out_dir, self.model_dir, self.device = dp, out_dir, "", device

    def prepare(
        self, cfg: ExperimentConfig, progress: Progress, data: TaskData | None, resume_from: str | None
    ) -> Prepared:
        """Rank 0 warm-starts and saves the policy; the others load it (no rank repeats the SFT)."""
        if resume_from is not None or self.dp.rank == 0:
            threads = torch.get_num_threads()
            if resume_from is None:  # the other ranks wait at the barrier: the SFT may use their cores
                torch.set_num_threads(
                    max(threads, min(os.cpu_count() or 1, cfg.learner.num_workers * threads))
                )
            out = prepare(cfg, progress, data, resume_from=resume_from, device=self.device)
            torch.set_num_threads(threads)
            self.model_dir = resume_from or str(self.out_dir / WARM_START_DIR)
            if resume_from is None:
                out[1].save_pretrained(self.model_dir)
                out[2].save_pretrained(self.model_dir)
            self.dp.barrier()
            return out
        self.dp.barrier()
        self.model_dir = str(self.out_dir / WARM_START_DIR)
        policy, tokenizer = load(Path(self.model_dir))
        data = data if data is not None else build_task(cfg.task, cfg.seed)
        return data, policy.to(self.device), tokenizer, 0.0, float("nan")

    def engine(self, cfg: ExperimentConfig, policy: torch.nn.Module, tokenizer) -> ShardedEngine:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        actor = ray.remote(RolloutWorker).options(
            num_cpus=0, num_gpus=0, scheduling_strategy=here, max_restarts=0
        )
        actor = actor.remote(
            self.model_dir,
            rollout_threads(cfg),
            cfg.rollout.engine,
            gpu=physical_gpu(self.device),
            gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
            keep_freed_memory=cfg.runtime.keep_freed_memory,
        )
        return ShardedEngine(actor, self.dp, tokenizer)

    def learner(self, cfg: ExperimentConfig, policy: torch.nn.Module, ref: torch.nn.Module | None) -> Learner:
        kwargs = learner_kwargs(cfg, ref) | {"dp": self.dp}
        if cfg.learner.backend == "deepspeed":
            from dibs.platform.learn.deepspeed_learner import DeepSpeedLearner

            return DeepSpeedLearner(policy, zero_stage=cfg.learner.zero_stage, **kwargs)
        return TorchLearner(policy, **kwargs)


def physical_gpu(device: torch.device) -> str | None:
    """The CUDA_VISIBLE_DEVICES entry of a learner's device (None on CPU): Ray Train shows each worker
    the GPUs of its node's workers and picks one by local rank, so the index maps through that list."""
    if device.type != "cuda":
        return None
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    index = device.index or 0
    return visible[index] if index < len(visible) else str(index)


class NullRecorder:
    """Ranks other than 0 compute every metric but write none."""

    def record(self, step, values, *, rollouts_consumed, tokens_generated, wall_seconds) -> None:
        pass

    def checkpoint(self, step, path) -> None:
        pass

    def record_prompts(self, step, rows) -> None:
        pass


def learner_worker(loop_config: dict) -> None:
    """One Ray Train worker: a rank of the loop (`loop_config["payload"]`: the run's `RunPayload`).
    Restarted after a failure, it resumes from the newest complete checkpoint of the run (or the one
    `dibs resume` named)."""
    import logging

    import ray
    import ray.train
    import transformers

    # Ray workers log INFO to the driver; alembic announces every plugin it loads at INFO.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from dibs.platform.runtime.recording import QueueProgress, StoreRecorder
    from dibs.platform.store import open_store

    ctx = ray.train.get_context()
    dp = DataParallel(ctx.get_world_rank(), ctx.get_world_size())
    payload: RunPayload = loop_config["payload"]
    cfg = payload.config
    if os.path.isdir(payload.cwd):
        os.chdir(payload.cwd)
    transformers.utils.logging.disable_progress_bar()
    configure_process(cfg.runtime.num_threads, cfg.runtime.keep_freed_memory)
    out_dir = Path(payload.checkpoint_dir).parent
    # A restarted group resumes from the newest usable checkpoint on disk, which includes the one
    # `dibs resume` picked; every rank checks the same files and so picks the same one.
    on_disk = checkpoint.on_disk(payload.checkpoint_dir)
    picked = checkpoint_check.choose(
        on_disk,
        run_dir=out_dir,
        model=cfg.model,
        alphabet=make_task(cfg.task).alphabet,
        on_skip=checkpoint.warn if dp.rank == 0 else lambda _: None,
    )
    resume_from = picked[1] if picked else None
    (out_dir / "workers").mkdir(parents=True, exist_ok=True)
    # Where each rank runs, for fault-injection and multi-node tests.
    (out_dir / "workers" / f"rank{dp.rank}.pid").write_text(str(os.getpid()))
    (out_dir / "workers" / f"rank{dp.rank}.node").write_text(ray.get_runtime_context().get_node_id())
    if dp.rank == 0:
        recorder = StoreRecorder(open_store(payload.db_url), payload.run_id)
        progress = QueueProgress(payload.queue) if payload.queue is not None else NullProgress()
    else:
        recorder, progress = NullRecorder(), NullProgress()
    device = torch.device("cpu")
    if resolve_device(cfg.runtime.device).type == "cuda":  # the rule run_ray_train sized the bundles by
        import ray.train.torch

        device = ray.train.torch.get_device()  # this worker's GPU (by local rank)
    summary = train(
        cfg,
        recorder,
        progress,
        checkpoint_dir=payload.checkpoint_dir,
        resume_from=resume_from,
        runtime=DistributedRuntime(dp, out_dir, device),
    )
    if dp.rank == 0:
        (out_dir / SUMMARY_FILE).write_text(json.dumps(summary))


def rollout_threads(cfg: ExperimentConfig) -> int:
    return cfg.learner.rollout_threads or cfg.runtime.num_threads


def learner_bundle(cfg: ExperimentConfig, gpu: bool) -> dict[str, float]:
    """One learner's placement-group bundle: the CPUs it and its actor take turns on, and on GPU the
    device they share (module docstring)."""
    cpus = {"CPU": max(cfg.runtime.num_threads, rollout_threads(cfg))}
    return cpus | {"GPU": 1} if gpu else cpus


def run_ray_train(cfg: ExperimentConfig, payload: RunPayload, queue: ProgressQueue) -> dict:
    """Fit a TorchTrainer of `learner.num_workers` ranks; the summary comes back through rank 0's file."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out_dir = Path(payload.checkpoint_dir).parent
    (out_dir / SUMMARY_FILE).unlink(missing_ok=True)
    gpu = resolve_device(cfg.runtime.device).type == "cuda"
    trainer = TorchTrainer(
        learner_worker,
        train_loop_config={"payload": payload.with_queue(queue)},  # Ray Train wants a dict
        scaling_config=ScalingConfig(
            num_workers=cfg.learner.num_workers, use_gpu=gpu, resources_per_worker=learner_bundle(cfg, gpu)
        ),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        run_config=RunConfig(
            name=payload.run_id,
            storage_path=str((out_dir / "ray").resolve()),
            failure_config=FailureConfig(max_failures=cfg.runtime.max_failures),
        ),
    )
    result = trainer.fit()
    if getattr(result, "error", None) is not None:
        raise result.error
    return json.loads((out_dir / SUMMARY_FILE).read_text())
