"""The transformers rollout engine: batched `generate` with KV cache, in the `Rollouts` layout (base.py)."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from dibs.platform.rollout.base import (
    Rollouts,
    SamplingSpec,
    _concat,
    chunk_rollouts,
    encode_samples,
    module_device,
)


class HFEngine:
    """transformers `generate` with KV cache; holds its own copy of the policy weights, on the device of
    that copy (batches come back on the CPU, where scoring and allocation happen)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, *, chunk_size: int = 512):
        self.model = model.eval()
        self.tok = tokenizer
        self.chunk_size = chunk_size

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state_dict)

    def sleep(self) -> None:
        """The KV cache is freed after each `generate` already; the weights are small next to it."""

    def wake_up(self) -> None:
        pass

    @torch.no_grad()
    def generate(self, prompts: list[str], counts: list[int], spec: SamplingSpec, *, seed: int) -> Rollouts:
        enc, gids = encode_samples(self.tok, prompts, counts)
        torch.manual_seed(seed)
        parts = [
            self._generate_chunk(
                enc.input_ids[i : i + self.chunk_size], enc.attention_mask[i : i + self.chunk_size], spec
            )
            for i in range(0, len(gids), self.chunk_size)
        ]
        return _concat(parts, gids, pad_id=self.tok.pad_token_id)

    def _generate_chunk(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, spec: SamplingSpec
    ) -> Rollouts:
        kwargs = (
            {"do_sample": False}
            if spec.greedy
            else {"do_sample": True, "temperature": spec.temperature, "top_p": spec.top_p, "top_k": 0}
        )
        if spec.ignore_eos:
            kwargs["min_new_tokens"] = spec.max_new_tokens
        # Inputs go to the model's device; results come back to the CPU, where the loop keeps batches.
        device = module_device(self.model)
        out = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=spec.max_new_tokens,
            eos_token_id=self.tok.eos_token_id,
            pad_token_id=self.tok.pad_token_id,
            return_dict_in_generate=True,
            output_logits=True,
            **kwargs,
        )
        P = input_ids.shape[1]
        temp = 1.0 if spec.greedy else spec.temperature
        logits = torch.stack(out.logits, dim=1).float() / temp  # [b, R, V]
        resp = out.sequences[:, P:]  # [b, R]
        logp = torch.log_softmax(logits, -1).gather(-1, resp.unsqueeze(-1)).squeeze(-1).cpu()
        resp = resp.cpu()
        is_eos = resp == self.tok.eos_token_id
        # Response tokens: everything up to and including the first EOS.
        resp_mask = ~((is_eos.long().cumsum(-1) - is_eos.long()) > 0)
        return chunk_rollouts(self.tok, input_ids, attention_mask, resp, resp_mask, logp, is_eos.any(-1))
