"""runtime.keep_freed_memory (platform/core/host.py): with it, a learner update stops re-faulting the pages of
its activations. Each side runs in its own process, since the setting is process-wide."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _faults(mode: str) -> int:
    script = Path(__file__).with_name("host_faults.py")
    out = subprocess.run(
        [sys.executable, str(script), mode], check=False, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_stops_page_faults_per_update():
    default, kept = _faults("default"), _faults("keep")
    # glibc's default hands the activations back after each micro-batch: thousands of faults an update
    # (a 96 x 40 batch at hidden 128 allocates tens of MB); kept, the pages stay mapped.
    assert default > 1000, default
    assert kept < default / 5, (kept, default)
