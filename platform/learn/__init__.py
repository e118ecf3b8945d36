"""Training the policy: the model, the learners, their checkpoints and the warm start.

- `model`: the demo's tiny Qwen2 and its character-level tokenizer, loading a model directory, the device;
- `base`: the `Learner` Protocol, what the loop and checkpoints ask of a learner;
- `learner`: the torch learner (AdamW, mini- and micro-batches, the packed forward), composed of the RL
  update (`PolicyUpdate`) and an optimizer side (`TorchBackend`, in `backend` with the `LearnerBackend`
  Protocol and the lr schedule); `deepspeed_learner`: the same update on a DeepSpeed engine (ZeRO);
- `checkpoint`: saving and loading what a run resumes from; `checkpoint_check`: whether a checkpoint may
  be resumed from (checked without unpickling anything) and which one a resume picks;
- `warm_start`: supervised fine-tuning on the task's worked solutions, before any RL.
"""
