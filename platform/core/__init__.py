"""The bottom layer of the platform: what every other part builds on. It imports nothing else of
dibs.platform.

- `config`: the typed, frozen experiment config and its loader; `strict_yaml`: the YAML reader it uses;
- `metrics`: metric names, defined once, and the per-prompt row; `flops`: training FLOP counting;
- `parallel`: data parallelism over prompt groups (ranks and collectives); `host`: process-wide settings
  (torch threads, freed memory);
- `provenance`: the git commit and package versions recorded with a run.
"""
