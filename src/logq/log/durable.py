"""The one place that makes files durable.

Small metadata files (checkpoints) are replaced atomically: write a
temporary file, fsync it, rename it over the old one, fsync the directory so
the rename itself survives power loss. A metadata record's slot file is
created that way once and afterwards overwritten in place
(`overwrite_in_place`: its checksum tells a torn overwrite, and the record's
other slot holds the previous value). Segment data is made durable with
`sync_data`; new or removed files with `sync_directory`, new directories
with `make_directory`, removed trees with
`remove_directories`; thousands of logs closed at once with one
`sync_filesystem` (syncfs) instead of an fsync per file. Nobody else in
logq renames or fsyncs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def _find_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    function: Callable[[int], int] | None = getattr(libc, "syncfs", None)
    return function


_syncfs = _find_syncfs()


def sync_data(fd: int) -> None:
    """Make a file's written data durable (fdatasync: metadata only as needed)."""
    os.fdatasync(fd)


def sync_filesystem(path: Path) -> None:
    """Make every write so far to the filesystem holding `path` durable, in
    one call (syncfs(2); sync(2), every filesystem, where it is missing)."""
    if _syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs of {path}: {os.strerror(code)}")
    finally:
        os.close(fd)


def sync_directory(directory: Path) -> None:
    """Make creations, renames and removals inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectorySyncs:
    """Fsyncs of directories shared between the logs that made entries in
    them at about the same time: the partitions of a topic opened together
    by one publish each make their directory in the topic's, and each needs
    an fsync of it that began after its mkdir. A caller takes a ticket
    after its change (`changed`) and asks for such an fsync (`sync`):
    callers that arrive while one runs wait for it and share the next one
    (group commit, as the logs' own fsyncs do); one whose change an fsync
    that began after it already covered returns at once."""

    # directories whose last fsync is remembered (a forgotten one is only
    # fsynced once more than it needs)
    REMEMBERED_MAX = 1024

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._tickets = 0  # a clock: changes and fsync starts take its next value
        self._running: set[str] = set()  # directories being fsynced now
        self._synced: dict[str, int] = {}  # directory -> when its last finished fsync began
        self.fsyncs = 0

    def changed(self) -> int:
        """A ticket for a change just made (take it after the change)."""
        with self._condition:
            self._tickets += 1
            return self._tickets

    def sync(self, directory: Path | str, ticket: int) -> None:
        """Return once an fsync of `directory` that began after `ticket` has
        finished (doing it, or waiting for the one under way)."""
        name = os.fspath(directory)
        with self._condition:
            while self._synced.get(name, 0) < ticket and name in self._running:
                self._condition.wait()
            if self._synced.get(name, 0) >= ticket:
                return
            self._running.add(name)
            self._tickets += 1
            began = self._tickets
        try:
            sync_directory(Path(name))
        except BaseException:
            with self._condition:
                self._running.discard(name)
                self._condition.notify_all()  # a waiter tries the fsync itself
            raise
        with self._condition:
            self._running.discard(name)
            self.fsyncs += 1
            # the newest last: the oldest is forgotten first
            self._synced[name] = max(began, self._synced.pop(name, 0))
            while len(self._synced) > self.REMEMBERED_MAX:
                del self._synced[next(iter(self._synced))]
            self._condition.notify_all()


def make_directory(path: Path, syncs: DirectorySyncs | None = None) -> None:
    """Create `path` and its missing parents so that the directory survives
    power loss: a new directory's name lives in its parent, which is fsynced
    (an fsync of the directory itself, or of files in it, does not make its
    own name durable); with `syncs`, that fsync is shared with other
    directories made in the same parent meanwhile. Nothing is fsynced when `path` exists, which would
    cost a device flush per partition at every start (0.4 ms here): a
    process killed between a mkdir and its parent's fsync leaves a directory
    whose name becomes durable with the next fsync of its parent. (A topic
    it held was never acknowledged: the metadata names a topic only after
    its directories are made.)"""
    path = Path(path)
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            if not directory.is_dir():
                raise
        if syncs is None:
            sync_directory(directory.parent)
        else:
            syncs.sync(directory.parent, syncs.changed())


def write_atomic(path: Path, data: bytes, *, sync_parent: bool = True) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file.
    `sync_parent=False`: the caller fsyncs the directory itself later (with
    other new names in it), or a crash that keeps the old file (or none) is
    as good as one that keeps the new."""
    temp = path.with_name(path.name + TEMP_SUFFIX)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    if sync_parent:
        sync_directory(path.parent)


def truncate_durably(fd: int, size: int) -> None:
    """Cut a file to `size` bytes and make the new length durable."""
    os.ftruncate(fd, size)
    os.fsync(fd)


def remove_files(paths: list[Path]) -> None:
    """Remove files (missing ones are fine) and make the removal durable."""
    directories: set[Path] = set()
    for path in paths:
        path.unlink(missing_ok=True)
        directories.add(path.parent)
    for directory in directories:
        sync_directory(directory)


def remove_directories(paths: list[Path]) -> None:
    """Remove directory trees (missing ones are fine) and make the removal
    durable: without the fsync of each parent, a power loss may bring a
    removed directory back."""
    parents: set[Path] = set()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path)
        parents.add(path.parent)
    for parent in parents:
        sync_directory(parent)


def overwrite_in_place(path: Path, data: bytes) -> None:
    """Replace the content of the existing file `path` with `data`, durably
    (fdatasync: the length is part of the data it covers). A crash may leave
    any mix of old and new bytes: only for files whose content carries its
    own checksum and has a second copy elsewhere."""
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        position = 0
        while position < len(data):
            position += os.pwrite(fd, view[position:], position)
        os.ftruncate(fd, len(data))
        os.fdatasync(fd)
    finally:
        os.close(fd)


def overwrite_unsynced(path: Path | str, data: bytes) -> None:
    """Write `data` as the content of `path` (created if missing) in place,
    without an fsync: durable with the next `sync_filesystem`, and a crash
    before it may leave any mix of old and new bytes (only for files whose
    content carries its own checksum, and whose loss costs nothing but time)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        position = 0
        while position < len(data):
            position += os.pwrite(fd, view[position:], position)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Remove a directory and all it holds (a missing one is fine), durably:
    once its entry is gone from its parent, so is everything under it."""
    if path.exists():
        remove_directories([path])
