"""argparse `type=` parsers for numeric flags: what a flag cannot hold fails at parsing, as one line
(`dibs: error: argument --target: ...`), before anything is opened or written."""

from __future__ import annotations

import argparse
import math

from dibs.platform.core.config import SEED_MAX


def finite_float(text: str) -> float:
    """A float that is a number: nan, inf and overflowing literals (1e999) are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text[:40]!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def seed(text: str) -> int:
    """A seed the store and every RNG accept (config.SEED_MAX)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:40]!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be in 0..{SEED_MAX}, got {text[:40]}")
    return value
