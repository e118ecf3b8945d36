"""The CPU rollout engine: a lean KV-cache decode loop over a Qwen2/Llama-family model's own weights.

Why not `model.generate`: on a small model every decode step is a few tiny matrix multiplies, and
transformers' generic machinery around them (mask building, cache objects, logits processors, stopping
criteria) costs more than the arithmetic. This loop runs the same math with fused projections (q|k|v and
gate|up each one matmul), a preallocated cache, and drops finished sequences from the batch as it goes,
so a step costs what its still-running rows need. Outputs follow `Rollouts`' layout exactly like
`HFEngine` (tests/unit/test_torch_engine.py holds the two to the same greedy tokens and log-probs).
Large models on GPU use vLLM instead (rollout.engine: vllm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from dibs.platform.rollout import qwen_forward as Q
from dibs.platform.rollout.base import (
    RolloutEngine,
    Rollouts,
    SamplingSpec,
    _concat,
    chunk_rollouts,
    encode_samples,
    module_device,
    position_ids,
)
from dibs.platform.rollout.hf_engine import HFEngine  # local_engine's `hf`

# Compact the running batch once this share of its rows has finished: each compaction copies the cache,
# so compacting at every finished row would cost more than the rows it saves.
COMPACT_FRACTION = 0.25


class _Weights:
    """The model's weights laid out for decoding (fused projections, no autograd); rebuilt after every
    weight load."""

    def __init__(self, model: PreTrainedModel):
        if not Q.supported(model):
            raise ValueError(
                f"rollout.engine torch: {type(model).__name__} is not a Qwen2/Llama model with "
                "SiLU and full attention; use rollout.engine hf"
            )
        self.model = model
        with torch.no_grad():
            self.layers = Q.layers(model)
        self.dims = Q.dims(model)
        self.lm_head = model.lm_head.weight.detach()
        self.embed = model.model.embed_tokens.weight.detach()


class _Cache:
    """Keys and values of every layer, [b, kv_heads, width, head_dim], written column by column."""

    def __init__(self, w: _Weights, batch: int, width: int, like: torch.Tensor):
        shape = (batch, w.dims.kv_heads, width, w.dims.head_dim)
        self.k = [like.new_empty(shape) for _ in w.layers]
        self.v = [like.new_empty(shape) for _ in w.layers]

    def keep(self, rows: torch.Tensor) -> None:
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]


def _forward(
    w: _Weights, tokens: torch.Tensor, positions: torch.Tensor, cache: _Cache, start: int, mask: torch.Tensor
) -> torch.Tensor:
    """Hidden states after the final norm for `tokens` [b, t] at cache columns start..start+t; `mask`
    [b, 1, t, start+t] says which cached columns each new token may attend to."""
    t = tokens.shape[1]
    gqa = w.dims.heads != w.dims.kv_heads

    def attend(i, q, k, v):
        cache.k[i][:, :, start : start + t] = k
        cache.v[i][:, :, start : start + t] = v
        return F.scaled_dot_product_attention(
            q, cache.k[i][:, :, : start + t], cache.v[i][:, :, : start + t], attn_mask=mask, enable_gqa=gqa
        )

    x = F.embedding(tokens, w.embed)
    cos, sin = Q.rope(w.model, positions)
    for i, layer in enumerate(w.layers):
        x = Q.block(x, i, layer, w.dims, cos, sin, attend)
    return Q.final_norm(w.model, x)


def _sample(
    logits: torch.Tensor, spec: SamplingSpec, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens and their log-probs under the temperature-scaled distribution (what the learner
    recomputes; top-p only narrows where the token is drawn from, as in `HFEngine`)."""
    logits = logits.float()
    if spec.greedy:
        tok = logits.argmax(-1)
        return tok, torch.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(-1)
    logp_all = torch.log_softmax(logits / spec.temperature, -1)
    probs = logp_all.exp()
    if spec.top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > spec.top_p  # keep the smallest set reaching top_p
        probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
    tok = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    return tok, logp_all.gather(-1, tok[:, None]).squeeze(-1)


class TorchEngine:
    """`RolloutEngine` over the decode loop above; keeps its own copy of the policy, on that copy's device,
    as `HFEngine` does (the two share the batch layout through rollout/base.py, not a base class)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, *, chunk_size: int = 512):
        self.model = model.eval()
        self.tok = tokenizer
        self.chunk_size = chunk_size
        self.w = _Weights(self.model)

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state_dict)
        self.w = _Weights(self.model)  # the fused projections are copies: rebuilt from the new weights

    def sleep(self) -> None:
        """Nothing to free: the KV cache lives only during `generate`."""

    def wake_up(self) -> None:
        pass

    @torch.no_grad()
    def generate(self, prompts: list[str], counts: list[int], spec: SamplingSpec, *, seed: int) -> Rollouts:
        enc, gids = encode_samples(self.tok, prompts, counts)
        device = module_device(self.model)
        gen = torch.Generator(device=device).manual_seed(seed)
        parts = [
            self._generate_chunk(
                enc.input_ids[i : i + self.chunk_size].to(device),
                enc.attention_mask[i : i + self.chunk_size].to(device),
                spec,
                gen,
            )
            for i in range(0, len(gids), self.chunk_size)
        ]
        return _concat(parts, gids, pad_id=self.tok.pad_token_id)

    def _generate_chunk(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, spec: SamplingSpec, gen: torch.Generator
    ) -> Rollouts:
        b, P = input_ids.shape
        R, eos = spec.max_new_tokens, self.tok.eos_token_id
        cache = _Cache(self.w, b, P + R, self.w.embed)
        keys = torch.zeros(b, P + R, dtype=torch.bool, device=input_ids.device)
        keys[:, :P] = attention_mask.bool()
        # Prefill: causal over real prompt tokens; a pad query sees itself only (its output is unused,
        # and a row with no key at all would make softmax NaN).
        causal = torch.ones(P, P, dtype=torch.bool, device=input_ids.device).tril()
        mask = (causal & keys[:, None, :P]) | torch.eye(P, dtype=torch.bool, device=input_ids.device)
        hidden = _forward(self.w, input_ids, position_ids(attention_mask), cache, 0, mask[:, None])
        tokens = torch.full((b, R), self.tok.pad_token_id, dtype=torch.long, device=input_ids.device)
        logp = torch.zeros(b, R, device=input_ids.device)
        lengths = torch.full((b,), R, dtype=torch.long, device=input_ids.device)
        # The running rows: their index in the chunk, next position, whether they are still generating.
        # Rows that finished keep decoding (their tokens are masked off) until the next compaction.
        rows = torch.arange(b, device=input_ids.device)
        pos, alive, last = attention_mask.sum(-1), torch.ones_like(rows, dtype=torch.bool), hidden[:, -1]
        for t in range(R):
            tok, lp = _sample(F.linear(last, self.w.lm_head), spec, gen)
            tokens[rows, t], logp[rows, t] = tok, lp
            if not spec.ignore_eos:
                ended = alive & (tok == eos)
                if ended.any():
                    lengths[rows[ended]] = t + 1
                    alive &= ~ended
                    if not alive.any():
                        break
            if t == R - 1:
                break
            if int((~alive).sum()) >= COMPACT_FRACTION * len(rows):
                live = torch.nonzero(alive).squeeze(-1)
                rows, pos, alive, tok, keys = rows[live], pos[live], alive[live], tok[live], keys[live]
                cache.keep(live)
            keys[:, P + t] = True
            hidden = _forward(
                self.w, tok[:, None], pos[:, None], cache, P + t, keys[:, None, None, : P + t + 1]
            )
            last, pos = hidden[:, -1], pos + 1
        return self._rollouts(input_ids, attention_mask, tokens, logp, lengths, spec)

    def _rollouts(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        tokens: torch.Tensor,
        logp: torch.Tensor,
        lengths: torch.Tensor,
        spec: SamplingSpec,
    ) -> Rollouts:
        """`HFEngine`'s layout: responses cut to the longest one, pad after EOS, CPU tensors."""
        width = int(lengths.max())
        resp, logp = tokens[:, :width].cpu(), logp[:, :width].cpu()
        lengths = lengths.cpu()
        resp_mask = torch.arange(width)[None, :] < lengths[:, None]
        resp = resp.masked_fill(~resp_mask, self.tok.pad_token_id)
        stopped = (
            (resp == self.tok.eos_token_id).any(-1)
            if not spec.ignore_eos
            else torch.zeros(len(resp), dtype=torch.bool)
        )
        return chunk_rollouts(self.tok, input_ids, attention_mask, resp, resp_mask, logp, stopped)


def local_engine(kind: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> RolloutEngine:
    """The in-process engine named by `rollout.engine` (vLLM is built from a saved model, elsewhere)."""
    if kind == "torch":
        return TorchEngine(model, tokenizer)
    if kind == "hf":
        return HFEngine(model, tokenizer)
    raise ValueError(f"rollout.engine {kind!r} has no in-process engine (torch | hf)")
