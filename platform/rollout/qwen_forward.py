"""Qwen2/Llama-family decoder layers as plain functions over the model's own parameters.

Shared by the decode loop (platform/rollout/torch_engine.py) and the learner's forward (`causal_logits`), so
it sits in rollout/, below learn/. The q|k|v and gate|up projections run fused, one matmul each;
attention is `scaled_dot_product_attention`, causal without a mask where rows are packed to the left (the
learner), or through a caller's `attend` (the decode loop's KV cache). The math is the transformers
implementation's (tests hold the two equal).
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
    return (
        c is not None
        and getattr(c, "model_type", None) in SUPPORTED
        and hasattr(model, "lm_head")
        and getattr(c, "hidden_act", "silu") == "silu"
        and not getattr(c, "use_sliding_window", False)
    )


def dims(model: torch.nn.Module) -> Dims:
    c = model.config
    return Dims(
        c.num_attention_heads,
        c.num_key_value_heads,
        getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
    )


def layers(model: torch.nn.Module) -> list[Layer]:
    """Every decoder layer's weights, projections concatenated. Differentiable: under autograd the
    gradients of the concatenations flow back to the model's own parameters."""
    out = []
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        bias = None if a.q_proj.bias is None else torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
        out.append(
            Layer(
                layer.input_layernorm.weight,
                layer.input_layernorm.variance_epsilon,
                torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
                bias,
                a.o_proj.weight,
                layer.post_attention_layernorm.weight,
                layer.post_attention_layernorm.variance_epsilon,
                torch.cat([m.gate_proj.weight, m.up_proj.weight]),
                m.down_proj.weight,
            )
        )
    return out


def rope(model: torch.nn.Module, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin at `positions` [b, t], shaped [b, t, 1, head_dim] to broadcast over heads. The
    sin's first half is negated, so that `rotate` needs one swap of halves instead of two slices, a
    negation and a cat (fewer passes over q and k, forward and backward)."""
    r = model.model.rotary_emb
    freqs = positions[..., None].float() * r.inv_freq.float()
    cos = torch.cat([freqs, freqs], dim=-1).cos() * r.attention_scaling
    sin = torch.cat([-freqs, freqs], dim=-1).sin() * r.attention_scaling
    return cos.unsqueeze(2), sin.unsqueeze(2)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' x * cos + rotate_half(x) * sin: rotate_half(x) = [-x2, x1] is [x2, x1] times the sign
    that `rope` folded into sin. The halves are swapped as a flip over a size-2 axis, not a roll: Inductor
    turns a roll into per-element modulo gathers (scalar loads), a flip into contiguous vector loads
    (the compiled backward's rotation kernel: 1.8 -> 1.2 ms per micro-batch)."""
    return x * cos + x.unflatten(-1, (2, x.shape[-1] // 2)).flip(-2).flatten(-2) * sin


Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def block(
    x: torch.Tensor, i: int, w: Layer, d: Dims, cos: torch.Tensor, sin: torch.Tensor, attend: Attend
) -> torch.Tensor:
    """One decoder layer on x [b, t, hidden]; attend(i, q, k, v) gets rotated q, k as [b, heads, t, dim]."""
    b, t, _ = x.shape
    nq, nqk = d.heads, d.heads + d.kv_heads
    h = F.rms_norm(x, (x.shape[-1],), w.ln1, w.eps1)
    qkv = F.linear(h, w.wqkv, w.bqkv).view(b, t, nqk + d.kv_heads, d.head_dim)
    qk = rotate(qkv[:, :, :nqk], cos, sin)  # q and k heads rotated in one pass
    q, k, v = qk[:, :, :nq].transpose(1, 2), qk[:, :, nq:].transpose(1, 2), qkv[:, :, nqk:].transpose(1, 2)
    att = attend(i, q, k, v)
    x = x + F.linear(att.transpose(1, 2).reshape(b, t, nq * d.head_dim), w.wo)
    h = F.rms_norm(x, (x.shape[-1],), w.ln2, w.eps2)
    return x + F.linear(swiglu(F.linear(h, w.wgu)), w.wd)


def swiglu(gu: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of the fused gate|up projection [..., 2 * intermediate]."""
    if torch.compiler.is_compiling() or not torch.is_grad_enabled():  # Inductor fuses the plain ops best
        gate, up = gu.chunk(2, dim=-1)
        return F.silu(gate) * up
    return _SwiGLU.apply(gu)


class _SwiGLU(torch.autograd.Function):
    """Eager SwiGLU whose backward writes both halves of the fused gradient in place: autograd's own
    backward of `chunk` concatenates them, one more pass over the widest activation of the layer."""

    @staticmethod
    def forward(ctx, gu):
        gate, up = gu.chunk(2, dim=-1)
        act = F.silu(gate)
        ctx.save_for_backward(gu, act)
        return act * up

    @staticmethod
    def backward(ctx, grad):
        gu, act = ctx.saved_tensors
        gate, up = gu.chunk(2, dim=-1)
        out = torch.empty_like(gu)
        d_gate, d_up = out.chunk(2, dim=-1)
        torch.mul(grad, act, out=d_up)
        torch.ops.aten.silu_backward.grad_input(grad * up, gate, grad_input=d_gate)
        return out


def final_norm(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    n = model.model.norm
    return F.rms_norm(x, (x.shape[-1],), n.weight, n.variance_epsilon)


def causal_logits(model: torch.nn.Module, input_ids: torch.Tensor, decoder=None) -> torch.Tensor:
    """Logits [b, t, vocab] of rows whose real tokens start at column 0 (padding only on the right):
    plain causal attention needs no mask then, and positions are the column indices. `decoder` replaces
    `decoder_logits` (the learner's compiled copy). cos and sin are computed here, outside it: inside a
    compiled graph Inductor recomputes them element by element in every layer's backward kernel."""
    b, t = input_ids.shape
    cos, sin = rope(model, torch.arange(t, device=input_ids.device).expand(b, t))
    return (decoder or decoder_logits)(model, input_ids, cos, sin)


def decoder_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    d = dims(model)
    t = input_ids.shape[1]
    emb = model.model.embed_tokens
    x = F.embedding(input_ids, emb.weight, padding_idx=emb.padding_idx)  # as nn.Embedding: no gradient there
    attend = _short_causal(t, d, x.device) if x.device.type == "cpu" and t <= SHORT else _sdpa_causal(d)
    for i, w in enumerate(layers(model)):
        x = block(x, i, w, d, cos, sin, attend)
    return F.linear(final_norm(model, x), model.lm_head.weight)


# Up to this many columns, CPU attention as two batched matmuls beats the fused (flash) kernel, forward
# plus backward: 2.2x at 38 columns, 1.5x at 64, 1.1x at 128, 0.8x at 256 (2-core EPYC, head_dim 32).
SHORT = 128


def _sdpa_causal(d: Dims) -> Attend:
    gqa = d.heads != d.kv_heads
    return lambda _, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)


def _short_causal(t: int, d: Dims, device: torch.device) -> Attend:
    """softmax(q k^T / sqrt(dim) + causal mask) v as two batched matmuls. The query heads that share a
    kv head (GQA) are stacked as one matrix against it, so k and v are never repeated; the scale and the
    mask ride in the first matmul (baddbmm)."""
    g = d.heads // d.kv_heads
    mask = torch.full((t, t), float("-inf"), device=device).triu(1).repeat(g, 1)  # [g*t, t]

    def attend(_, q, k, v):
        b = q.shape[0]
        q = q.reshape(b * d.kv_heads, g * t, d.head_dim)
        k, v = k.reshape(b * d.kv_heads, t, d.head_dim), v.reshape(b * d.kv_heads, t, d.head_dim)
        p = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=d.head_dim**-0.5).softmax(-1)
        return torch.bmm(p, v).view(b, d.heads, t, d.head_dim)

    return attend
