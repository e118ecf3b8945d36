"""What a run depended on, recorded with it: the git commit of the code and the versions of the packages
that decide its numbers (docs/conventions.md, Code style)."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in ("dibs", "torch", "transformers", "ray", "deepspeed", "reasoning-gym", "sqlalchemy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out
