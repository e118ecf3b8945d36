"""Qwen2/Llama-family decoder layers as plain functions over the model's own parameters.

Shared by the decode loop (platform/torch_engine.py) and the learner's forward (`causal_logits`). The
q|k|v and gate|up projections run fused, one matmul each; attention is `scaled_dot_product_attention`,
causal without a mask where rows are packed to the left (the learner), or through a caller's `attend`
(the decode loop's KV cache). The math is the transformers implementation's (tests hold the two equal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

SUPPORTED = ("qwen2", "llama")


class Layer(NamedTuple):
    ln1: torch.Tensor
    eps1: float
    wqkv: torch.Tensor
    bqkv: torch.Tensor | None
    wo: torch.Tensor
    ln2: torch.Tensor
    eps2: float
    wgu: torch.Tensor
    wd: torch.Tensor


class Dims(NamedTuple):
    heads: int
    kv_heads: int
    head_dim: int


def supported(model: torch.nn.Module) -> bool:
    """A plain (not DeepSpeed-wrapped) Qwen2/Llama causal LM this module can run."""
    c = getattr(model, "config", None)
    return (c is not None and getattr(c, "model_type", None) in SUPPORTED and hasattr(model, "lm_head")
            and getattr(c, "hidden_act", "silu") == "silu" and not getattr(c, "use_sliding_window", False))


def dims(model: torch.nn.Module) -> Dims:
    c = model.config
    return Dims(c.num_attention_heads, c.num_key_value_heads,
                getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)


def layers(model: torch.nn.Module) -> list[Layer]:
    """Every decoder layer's weights, projections concatenated. Differentiable: under autograd the
    gradients of the concatenations flow back to the model's own parameters."""
    out = []
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        bias = None if a.q_proj.bias is None else torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
        out.append(Layer(layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon,
                         torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]), bias, a.o_proj.weight,
                         layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon,
                         torch.cat([m.gate_proj.weight, m.up_proj.weight]), m.down_proj.weight))
    return out


def rope(model: torch.nn.Module, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin at `positions` [b, t], shaped [b, 1, t, head_dim] to broadcast over heads."""
    r = model.model.rotary_emb
    freqs = positions[..., None].float() * r.inv_freq.float()
    emb = torch.cat([freqs, freqs], dim=-1)
    return (emb.cos() * r.attention_scaling).unsqueeze(1), (emb.sin() * r.attention_scaling).unsqueeze(1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def block(x: torch.Tensor, i: int, w: Layer, d: Dims, cos: torch.Tensor, sin: torch.Tensor,
          attend: Attend) -> torch.Tensor:
    """One decoder layer on x [b, t, hidden]; attend(i, q, k, v) gets rotated q, k as [b, heads, t, dim]."""
    b, t, _ = x.shape
    nq, nk = d.heads * d.head_dim, d.kv_heads * d.head_dim
    h = F.rms_norm(x, (x.shape[-1],), w.ln1, w.eps1)
    qkv = F.linear(h, w.wqkv, w.bqkv)
    q = qkv[..., :nq].view(b, t, d.heads, d.head_dim).transpose(1, 2)
    k = qkv[..., nq:nq + nk].view(b, t, d.kv_heads, d.head_dim).transpose(1, 2)
    v = qkv[..., nq + nk:].view(b, t, d.kv_heads, d.head_dim).transpose(1, 2)
    att = attend(i, rotate(q, cos, sin), rotate(k, cos, sin), v)
    x = x + F.linear(att.transpose(1, 2).reshape(b, t, nq), w.wo)
    h = F.rms_norm(x, (x.shape[-1],), w.ln2, w.eps2)
    gate, up = F.linear(h, w.wgu).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, w.wd)


def final_norm(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    n = model.model.norm
    return F.rms_norm(x, (x.shape[-1],), n.weight, n.variance_epsilon)


def causal_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits [b, t, vocab] of rows whose real tokens start at column 0 (padding only on the right):
    plain causal attention needs no mask then, and positions are the column indices."""
    d = dims(model)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    cos, sin = rope(model, positions)
    emb = model.model.embed_tokens
    x = F.embedding(input_ids, emb.weight, padding_idx=emb.padding_idx)  # as nn.Embedding: no gradient there
    gqa = d.heads != d.kv_heads

    def attend(_, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)

    for i, w in enumerate(layers(model)):
        x = block(x, i, w, d, cos, sin, attend)
    return F.linear(final_norm(model, x), model.lm_head.weight)
