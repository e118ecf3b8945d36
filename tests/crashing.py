"""A run killed between steps, for resume tests: `CrashAfter(step)` as the loop's progress raises `Crash`
once RL step `step` has been recorded (before its checkpoint)."""

from dibs.platform.runtime.recording import NullProgress


class Crash(Exception):
    pass


class CrashAfter(NullProgress):
    """Raises once RL step `step` has been recorded (before its checkpoint): a killed process."""

    def __init__(self, step):
        self.step = step

    def update(self, stage, done, total, info):
        if stage == "rl" and done == self.step:
            raise Crash(f"killed after step {done}")
