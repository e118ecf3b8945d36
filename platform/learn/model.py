"""A tiny Qwen2 causal LM and a character-level tokenizer trained locally with `tokenizers`.

Both are saved in Hugging Face format (`save_pretrained`) so transformers and vLLM load them, built once
per architecture and cached under `model.cache_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from dibs.platform.core.config import ConfigError, ModelConfig

SPECIALS = ["<pad>", "<s>", "</s>"]


def train_tokenizer(alphabet: Sequence[str]) -> PreTrainedTokenizerFast:
    """Character-level BPE with no merges over a task's alphabet (tasks/base.py, `Task.alphabet`): its
    single characters, and each longer entry (chain sums: `\\boxed{`) as one token (shorter responses)."""
    chars = [c for c in alphabet if len(c) == 1]
    whole = [t for t in alphabet if len(t) > 1]
    if not chars:
        raise ValueError(f"a task's alphabet needs at least one single character, got {list(alphabet)[:5]}")
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False))
    if whole:
        tok.pre_tokenizer = pre_tokenizers.Split(
            pattern="|".join(re.escape(t) for t in whole), behavior="isolated"
        )
    tok.decoder = decoders.Fuse()
    trainer = trainers.BpeTrainer(
        vocab_size=len(SPECIALS) + len(chars),
        special_tokens=SPECIALS,
        initial_alphabet=chars,
        show_progress=False,
    )
    tok.train_from_iterator(["".join(chars)], trainer=trainer)
    if whole:
        tok.add_tokens(whole)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", padding_side="left"
    )


def qwen2_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
        torch_dtype="float32",
    )


def _arch_key(cfg: ModelConfig, seed: int, alphabet: Sequence[str]) -> str:
    # Architecture only: where models are cached or loaded from (model.path) names no new weights.
    spec = cfg.model_dump(exclude={"cache_dir", "path"}) | {"seed": seed, "alphabet": list(alphabet)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def build_base_model(cfg: ModelConfig, seed: int, alphabet: Sequence[str]) -> Path:
    """Build (or reuse) the randomly initialised model + tokenizer over a task's `alphabet`; returns its
    HF directory."""
    out = Path(cfg.cache_dir) / f"qwen2-tiny-{_arch_key(cfg, seed, alphabet)}"
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    tokenizer = train_tokenizer(alphabet)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(qwen2_config(cfg, tokenizer))
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(out) if not out.exists() else None  # another process may have won the race
    return out


def load(path: str | Path) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """Weights from safetensors only: a pickled `pytorch_model.bin` could run code when loaded."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path, padding_side="left")
    model = Qwen2ForCausalLM.from_pretrained(
        path, attn_implementation="sdpa", dtype=torch.float32, use_safetensors=True
    )
    return model, tokenizer


def resolve_device(setting: str) -> torch.device:
    """`runtime.device` as a torch device: auto is cuda when torch sees a GPU, else cpu."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device: cuda, but torch sees no CUDA device here (use auto or cpu)")
    return torch.device(setting)


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
