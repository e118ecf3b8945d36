"""Training FLOP counting and scaling fits for the performance figures (docs/conventions.md, "Performance
figures"): FLOPs = 6 x (parameters used in matrix multiplies: attention, MLP and the output layer; the
input embedding lookup excluded) x non-padding tokens in the update."""

from __future__ import annotations

import math

import torch

FORMULA = "6 x matmul_params x non_padding_tokens"


def matmul_params(model: torch.nn.Module) -> int:
    """Weights of every `nn.Linear` (attention and MLP projections and the output layer, tied or not to
    the embedding): each takes part in one matmul per token. Biases, norms and the input embedding
    (a lookup) do not count."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def training_flops(params: int, tokens: int) -> float:
    """Forward (2) plus backward (4) FLOPs per matmul weight per token."""
    return 6.0 * params * tokens


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares exponent k of y ~ c * x^k (the slope of log y against log x)."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("loglog_slope: needs at least two (x, y) points of equal count")
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    var = sum((a - mx) ** 2 for a in lx)
    if var == 0:
        raise ValueError("loglog_slope: the x values must differ")
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / var
