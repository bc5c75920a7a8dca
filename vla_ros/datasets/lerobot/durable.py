"""Crash-safe files of a dataset being recorded: every file is written to a temporary name, flushed and renamed
over its target; the recorder's lock and its scratch folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vla_ros.datasets.lerobot.layout import DatasetError, _pyarrow

_TMP_DIR = ".vla_ros_tmp"  # in-progress episodes and the recorder lock; not part of the dataset


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform or file system can open directories
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace_durably(source: Path, target: Path) -> None:
    """Move a finished file into place so that a crash leaves either the old target or the complete new one."""
    with open(source, "rb+") as handle:
        os.fsync(handle.fileno())
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    _fsync_dir(target.parent)


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")  # hidden: LeRobot's *.parquet globs never see it
    write(temporary)
    _replace_durably(temporary, path)


def _write_json(path: Path, data: Any) -> None:
    _write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=4, ensure_ascii=False)))


def _write_parquet(path: Path, table) -> None:
    _, pq = _pyarrow()
    _write_atomically(path, lambda tmp: pq.write_table(table, tmp, compression="snappy"))


def _lock_root(root: Path):
    """An exclusive lock on the dataset root: two recorders appending to one dataset would corrupt it."""
    tmp = root / _TMP_DIR
    tmp.mkdir(parents=True, exist_ok=True)
    handle = open(tmp / "lock", "a+")  # noqa: SIM115 - held for the writer's lifetime
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise DatasetError(f"{root}: another recorder is writing to this dataset (its lock is held)") from exc
    return handle


def _clear_tmp(root: Path) -> None:
    """Remove what an interrupted recording left in the scratch folder, and half-written files of an interrupted
    _write_atomically."""
    for path in (root / _TMP_DIR).iterdir():
        if path.name != "lock":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for folder in ("meta", "data", "videos"):
        for path in (root / folder).rglob(".*.tmp"):
            path.unlink()
