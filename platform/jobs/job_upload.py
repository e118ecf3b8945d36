"""What `dibs submit` uploads: the files git tracks in the project, plus the paths the user names.

A working tree holds more than the project: `.env` files, keys, private experiment YAMLs, stores,
caches. An exclude list only stops what someone thought of, so the upload is built the other way round:
a throw-away folder receives exactly `git ls-files` of the project (files deleted from the tree are
skipped) and each `--include PATH` (a file, or a folder with everything under it), and that folder is
what Ray packs. The project's `.gitignore` / `.rayignore` files stay behind: Ray applies them to the
folder it packs, and they would drop the very paths `--include` named.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

IGNORE_FILES = (".gitignore", ".rayignore")


class UploadError(Exception):
    """A project that is not a git work tree, or an `--include` path that cannot be uploaded."""


def tracked_files(root: Path) -> list[str]:
    """The files git tracks under ``root`` (relative paths), or one UploadError line."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=root, capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise UploadError(f"{root}: cannot list the files git tracks ({exc})") from exc
    if out.returncode != 0:
        reason = (out.stderr.decode(errors="replace").strip().splitlines() or ["git ls-files failed"])[0]
        raise UploadError(
            f"{root}: dibs submit uploads only the files git tracks, and this is not a git work "
            f"tree ({reason})"
        )
    return [p for p in out.stdout.decode().split("\0") if p]


def project_paths(root: Path, names: Iterable[str]) -> tuple[str, ...]:
    """`--include` paths (relative to the working directory) as paths relative to ``root``, so that a
    retry from anywhere uploads the same; UploadError for a path outside the project."""
    out = []
    for name in names:
        try:
            out.append(Path(os.path.abspath(name)).relative_to(root).as_posix())
        except ValueError:
            raise UploadError(f"--include {name}: not inside the project {root}") from None
    return tuple(out)


def included_files(root: Path, include: Iterable[str]) -> list[str]:
    """The files of each included path (relative to ``root``; a folder: the files under it), or one
    UploadError line for a path that is gone."""
    out: list[str] = []
    for rel in include:
        path = root / rel
        if path.is_file():
            out.append(Path(rel).as_posix())
        elif path.is_dir():
            out += sorted(p.relative_to(root).as_posix() for p in path.rglob("*") if p.is_file())
        else:
            raise UploadError(f"--include {rel}: no such file or directory in {root}")
    return out


def upload_list(root: Path, include: Iterable[str] = ()) -> list[str]:
    """Every path (relative to ``root``) a submission uploads, sorted."""
    tracked = [p for p in tracked_files(root) if Path(p).name not in IGNORE_FILES and (root / p).is_file()]
    files = sorted(set(tracked) | set(included_files(root, include)))
    for rel in files:  # Ray packs what a link points to: a link out of the project would carry that up
        if (root / rel).is_symlink() and not (root / rel).resolve().is_relative_to(root):
            raise UploadError(f"{rel}: a link to {(root / rel).resolve()}, outside the project; not uploaded")
    return files


@contextlib.contextmanager
def staged_project(root: Path, include: Iterable[str] = ()) -> Iterator[str]:
    """A folder holding `dibs/` with the upload list's files: uploaded as working_dir, it makes
    `import dibs` work (the repository root is the `dibs` package)."""
    files = upload_list(root, include)
    with tempfile.TemporaryDirectory(prefix="dibs-job-") as stage:
        dest = Path(stage) / "dibs"
        for rel in files:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, dest / rel, follow_symlinks=False)  # a link stays a link, not its target
        yield stage
