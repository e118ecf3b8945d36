"""Real Ray clusters for tests, on loopback with a private temp dir: they stop exactly the processes
they started (those whose command line names that temp dir), never another Ray on the machine."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))  # the venv's: its workers run this venv's python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_temp_dir() -> str:
    return f"/tmp/dibs-ray-{secrets.token_hex(3)}"  # short: Ray's socket paths must fit 107 bytes


def ray_env() -> dict[str, str]:
    """The nodes' environment: no auth, and this venv's `python` first on PATH (a job's entrypoint runs
    `python`, as on a cluster whose image holds dibs' dependencies)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return os.environ | {"RAY_AUTH_MODE": "disabled", "PATH": path}


def start_node(args: list[str]) -> None:
    subprocess.run(
        [RAY, "start", *args, "--disable-usage-stats"],
        env=ray_env(),
        check=True,
        capture_output=True,
        timeout=180,
    )


def ours(temp_dir: str) -> list[psutil.Process]:
    """Processes whose command line names `temp_dir` or that run inside it (a job's entrypoint and its
    workers run in their working_dir copy under the temp dir; Ray workers retitle their command line)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in p.info["cmdline"] or []) or p.cwd().startswith(temp_dir):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_ours(temp_dir: str) -> None:
    procs = [p for p in ours(temp_dir) if p.pid != os.getpid()]
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            continue
    shutil.rmtree(temp_dir, ignore_errors=True)
