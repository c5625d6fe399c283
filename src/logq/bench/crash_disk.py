"""A recorded disk: what a power cut at any moment of a run would leave.

`DiskRecorder` wraps, for the duration of a run, the `os` and `shutil`
functions through which logq changes files (`os.open` with `O_CREAT` or
`O_TRUNC`, `write`, `pwrite`, `pwritev`, `ftruncate`, `fsync`, `fdatasync`,
`close`, `replace`, `rename`, `unlink`, `mkdir`, `rmdir`,
`shutil.rmtree`, and logq's `durable.sync_filesystem`: a syncfs makes every
file and directory under it durable at once). The real call runs as usual (the broker works on real
files); for paths under the recorded directory it also appends one
operation to a list, naming files by a model inode, so `ops[:k]` is
everything the program had done when the `k`-th operation finished.

`materialise(k, rng, target)` then writes into `target` one state that the
disk could hold after a power cut right after operation `k`. The rules are
those of ext4 with `data=ordered` (Documentation/admin-guide/ext4.rst: "All
data are forced directly out to the main file system prior to its metadata
being committed to the journal"), taken conservatively, so that code which
survives them survives ext4 and any file system that keeps fsync's promise
(fsync(2): the call "transfers all modified in-core data of the file ... to
the disk device"; calling fsync on the file "does not necessarily ensure
that the entry in the directory containing the file has also reached disk.
For that an explicit fsync() on a file descriptor for the directory is also
needed"):

1. File data. A file holds what its writes and truncates up to its last
   `fsync`/`fdatasync` made of it. Of the writes and truncates after that,
   a random prefix happened, in order; the last write of the prefix may be
   torn (a random prefix of its bytes), and each truncate in the prefix may
   or may not have happened. Nothing else: no write lands out of order and
   no block turns to zeros (ext4's data=ordered writes data before the size
   that exposes it; a rule adding zeroed tails would be stricter still).
2. Names. A create, `mkdir`, rename or unlink in a directory is kept if
   that directory was fsynced after it. Otherwise it may be lost: ext4
   commits its journal in order, so the harness keeps, in addition, the
   operations before a random point of the sequence (or none of them),
   never a later one without the earlier ones. A rename is two name
   changes, one per directory, each kept by its own directory's rule.
   `rmtree` is the unlinks and rmdirs it makes, children first.
3. A file whose name is not kept is gone (its data with it); a name kept for
   a file keeps the data rule 1 gives that file, wherever it was written
   through. A directory's contents exist only if the directory's own name
   is kept in its parent, and so on up to the recorded root, which exists.

Being conservative here means allowing more outcomes than ext4 would: a
defect found under these rules may need another file system to show, and
is reported as such.
"""

from __future__ import annotations

import bisect
import os
import random
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logq.log import durable

# Operation kinds (the first field of each recorded tuple).
LINK = "link"  # (LINK, directory, name, inode, is_directory): a create or mkdir
UNLINK = "unlink"  # (UNLINK, directory, name)
WRITE = "write"  # (WRITE, inode, offset, data)
TRUNCATE = "truncate"  # (TRUNCATE, inode, size)
SYNC = "sync"  # (SYNC, inode): fsync or fdatasync of a file or a directory

Op = tuple[Any, ...]
ROOT = 0  # the inode of the recorded directory


@dataclass(slots=True)
class _Inode:
    is_directory: bool
    data_ops: list[int] = field(default_factory=list)  # op indexes: writes, truncates
    name_ops: list[int] = field(default_factory=list)  # op indexes: links, unlinks in it
    syncs: list[int] = field(default_factory=list)  # op indexes of its fsyncs


class DiskRecorder:
    """Records the file-system operations made under `root` (see the module doc)."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.abspath(root)
        self.ops: list[Op] = []
        self._inodes: list[_Inode] = [_Inode(is_directory=True)]
        self._paths: dict[str, int] = {self.root: ROOT}
        self._fds: dict[int, int] = {}
        self._positions: dict[int, int] = {}  # file position of fds written with os.write
        self._lock = threading.RLock()
        self._local = threading.local()  # .quiet: inside rmtree (recorded as a whole)
        self._saved: dict[tuple[Any, str], Any] = {}

    @property
    def count(self) -> int:
        """Operations recorded so far: the index an acknowledgement given now carries."""
        return len(self.ops)

    # -- wrapping -------------------------------------------------------------------------

    @contextmanager
    def recording(self) -> Iterator[DiskRecorder]:
        """Wrap the functions for the duration of the block (one recorder at a time)."""
        wrappers: dict[tuple[Any, str], Callable[..., Any]] = {
            (os, "open"): self._open,
            (os, "close"): self._close,
            (os, "write"): self._write,
            (os, "pwrite"): self._pwrite,
            (os, "pwritev"): self._pwritev,
            (os, "ftruncate"): self._ftruncate,
            (os, "fsync"): self._fsync,
            (os, "fdatasync"): self._fsync,
            (os, "replace"): self._rename,
            (os, "rename"): self._rename,
            (os, "unlink"): self._unlink,
            (os, "remove"): self._unlink,
            (os, "mkdir"): self._mkdir,
            (os, "rmdir"): self._rmdir,
            (shutil, "rmtree"): self._rmtree,
            (durable, "sync_filesystem"): self._sync_filesystem,
        }
        assert not self._saved, "already recording"
        for (module, name), wrapper in wrappers.items():
            self._saved[(module, name)] = getattr(module, name)
            setattr(module, name, wrapper)
        try:
            yield self
        finally:
            for (module, name), original in self._saved.items():
                setattr(module, name, original)
            self._saved.clear()

    def _real(self, module: Any, name: str) -> Callable[..., Any]:
        return self._saved[(module, name)]  # type: ignore[no-any-return]

    def _quiet(self) -> bool:
        return bool(getattr(self._local, "quiet", False))

    def _inside(self, path: Any) -> str | None:
        """The absolute path if it lies under the root (and is recorded), else None."""
        if self._quiet() or isinstance(path, int):
            return None
        absolute = os.path.abspath(os.fsdecode(path))
        if absolute == self.root or absolute.startswith(self.root + os.sep):
            return absolute
        return None

    def _record(self, op: Op) -> int:
        index = len(self.ops)
        self.ops.append(op)
        return index

    def _parent(self, path: str) -> tuple[int, str]:
        parent, name = os.path.split(path)
        directory = self._paths.get(parent)
        assert directory is not None, f"{parent} was made outside the recording"
        return directory, name

    def _link(self, path: str, inode: int) -> None:
        directory, name = self._parent(path)
        index = self._record((LINK, directory, name, inode, self._inodes[inode].is_directory))
        self._inodes[directory].name_ops.append(index)
        self._paths[path] = inode

    def _unlink_name(self, path: str) -> None:
        directory, name = self._parent(path)
        index = self._record((UNLINK, directory, name))
        self._inodes[directory].name_ops.append(index)
        del self._paths[path]

    def _new_inode(self, is_directory: bool) -> int:
        self._inodes.append(_Inode(is_directory=is_directory))
        return len(self._inodes) - 1

    def _data(self, inode: int, op: Op) -> None:
        self._inodes[inode].data_ops.append(self._record(op))

    # -- the wrappers ---------------------------------------------------------------------

    def _open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        real = self._real(os, "open")
        inside = None if dir_fd is not None else self._inside(path)
        if inside is None:
            return real(path, flags, mode, dir_fd=dir_fd)  # type: ignore[no-any-return]
        with self._lock:
            fd: int = real(path, flags, mode)
            inode = self._paths.get(inside)
            if inode is None:
                assert flags & os.O_CREAT, f"{inside} was made outside the recording"
                inode = self._new_inode(is_directory=False)
                self._link(inside, inode)
            elif flags & os.O_TRUNC and not self._inodes[inode].is_directory:
                self._data(inode, (TRUNCATE, inode, 0))
            self._fds[fd] = inode
            self._positions[fd] = 0
            return fd

    def _close(self, fd: int) -> None:
        with self._lock:
            self._real(os, "close")(fd)
            self._fds.pop(fd, None)
            self._positions.pop(fd, None)

    def _write(self, fd: int, data: Any) -> int:
        with self._lock:
            written: int = self._real(os, "write")(fd, data)
            inode = self._fds.get(fd)
            if inode is not None and written > 0:
                position = self._positions[fd]
                self._data(inode, (WRITE, inode, position, bytes(memoryview(data)[:written])))
                self._positions[fd] = position + written
            return written

    def _pwrite(self, fd: int, data: Any, offset: int) -> int:
        with self._lock:
            written: int = self._real(os, "pwrite")(fd, data, offset)
            inode = self._fds.get(fd)
            if inode is not None and written > 0:
                self._data(inode, (WRITE, inode, offset, bytes(memoryview(data)[:written])))
            return written

    def _pwritev(self, fd: int, buffers: Any, offset: int, *flags: int) -> int:
        with self._lock:
            buffers = list(buffers)
            written: int = self._real(os, "pwritev")(fd, buffers, offset, *flags)
            inode = self._fds.get(fd)
            if inode is not None and written > 0:
                joined = b"".join(bytes(memoryview(part)) for part in buffers)[:written]
                self._data(inode, (WRITE, inode, offset, joined))
            return written

    def _ftruncate(self, fd: int, size: int) -> None:
        with self._lock:
            self._real(os, "ftruncate")(fd, size)
            inode = self._fds.get(fd)
            if inode is not None:
                self._data(inode, (TRUNCATE, inode, size))

    def _fsync(self, fd: int) -> None:
        # fsync and fdatasync alike: fdatasync also makes the size durable when
        # reading the data back needs it, which is all rule 1 relies on
        real = self._real(os, "fsync")
        with self._lock:
            real(fd)
            inode = self._fds.get(fd)
            if inode is not None:
                self._inodes[inode].syncs.append(self._record((SYNC, inode)))

    def _sync_filesystem(self, path: Path) -> None:
        # syncfs(2): every file's data and every directory's names so far are
        # durable, as if each had been fsynced at this point
        real = self._saved[(durable, "sync_filesystem")]
        with self._lock:
            real(path)
            if self._inside(path) is None:
                return
            index = self._record((SYNC, ROOT))
            for node in self._inodes:
                node.syncs.append(index)

    def _rename(
        self,
        source: Any,
        target: Any,
        *,
        src_dir_fd: int | None = None,
        dst_dir_fd: int | None = None,
    ) -> None:
        real = self._real(os, "replace")
        inside_source, inside_target = self._inside(source), self._inside(target)
        with self._lock:
            real(source, target, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
            if inside_source is None or inside_target is None:
                assert inside_source is None and inside_target is None
                return
            inode = self._paths[inside_source]
            assert not self._inodes[inode].is_directory, "directory renames are not modelled"
            self._unlink_name(inside_source)
            if inside_target in self._paths:
                self._unlink_name(inside_target)
            self._link(inside_target, inode)

    def _unlink(self, path: Any, *, dir_fd: int | None = None) -> None:
        inside = None if dir_fd is not None else self._inside(path)
        with self._lock:
            self._real(os, "unlink")(path, dir_fd=dir_fd)
            if inside is not None:
                self._unlink_name(inside)

    def _mkdir(self, path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        inside = None if dir_fd is not None else self._inside(path)
        with self._lock:
            self._real(os, "mkdir")(path, mode, dir_fd=dir_fd)
            if inside is not None:
                self._link(inside, self._new_inode(is_directory=True))

    def _rmdir(self, path: Any, *, dir_fd: int | None = None) -> None:
        inside = None if dir_fd is not None else self._inside(path)
        with self._lock:
            self._real(os, "rmdir")(path, dir_fd=dir_fd)
            if inside is not None:
                self._unlink_name(inside)

    def _rmtree(self, path: Any, *args: Any, **kwargs: Any) -> None:
        inside = self._inside(path)
        with self._lock:
            self._local.quiet = True
            try:
                self._real(shutil, "rmtree")(path, *args, **kwargs)
            finally:
                self._local.quiet = False
            if inside is None or inside not in self._paths:
                return
            if os.path.lexists(inside):
                return  # an error was ignored part way: the tree is still there
            doomed = [p for p in self._paths if p == inside or p.startswith(inside + os.sep)]
            for gone in sorted(doomed, key=lambda p: -p.count(os.sep)):
                self._unlink_name(gone)

    # -- what a power cut leaves ------------------------------------------------------------

    def materialise(
        self, cut: int, rng: random.Random, target: Path, *, journal_point: int | None = None
    ) -> None:
        """Write into `target` (an empty or missing directory) what the disk
        may hold after a power cut once `ops[:cut]` had happened. Name
        changes before `journal_point` are kept even where no directory fsync
        followed them (rule 2; random when None, 0 keeps only fsynced ones)."""
        assert 0 <= cut <= len(self.ops)
        ops = self.ops
        if journal_point is None:
            journal_point = 0 if rng.random() < 0.5 else rng.randint(0, cut)
        target.mkdir(parents=True, exist_ok=True)
        contents: dict[int, bytes] = {}
        self._place(ROOT, target, cut, journal_point, rng, contents, ops)

    def _entries(
        self, directory: int, cut: int, journal_point: int, ops: list[Op]
    ) -> dict[str, int]:
        inode = self._inodes[directory]
        synced = _last_before(inode.syncs, cut)
        entries: dict[str, int] = {}
        for index in inode.name_ops:
            if index >= cut:
                break
            if index >= journal_point and index > synced:
                continue  # neither fsynced with its directory nor committed with earlier ones
            op = ops[index]
            if op[0] == LINK:
                entries[op[2]] = op[3]
            else:
                entries.pop(op[2], None)
        return entries

    def _place(
        self,
        directory: int,
        path: Path,
        cut: int,
        journal_point: int,
        rng: random.Random,
        contents: dict[int, bytes],
        ops: list[Op],
    ) -> None:
        for name, inode in sorted(self._entries(directory, cut, journal_point, ops).items()):
            if self._inodes[inode].is_directory:
                (path / name).mkdir()
                self._place(inode, path / name, cut, journal_point, rng, contents, ops)
                continue
            data = contents.get(inode)
            if data is None:
                data = contents[inode] = self._content(inode, cut, rng, ops)
            (path / name).write_bytes(data)

    def _content(self, inode: int, cut: int, rng: random.Random, ops: list[Op]) -> bytes:
        node = self._inodes[inode]
        synced = _last_before(node.syncs, cut)
        data = bytearray()
        end = bisect.bisect_left(node.data_ops, cut)
        durable = bisect.bisect_left(node.data_ops, synced) if synced >= 0 else 0
        for index in node.data_ops[:durable]:
            _apply(data, ops[index])
        after = node.data_ops[durable:end]
        kept = rng.randint(0, len(after)) if after else 0
        for number, index in enumerate(after[:kept]):
            op = ops[index]
            if op[0] == TRUNCATE:
                if rng.random() < 0.5:
                    _apply(data, op)
            elif number == kept - 1 and rng.random() < 0.5:
                _apply(data, (WRITE, inode, op[2], op[3][: rng.randint(0, len(op[3]))]))
            else:
                _apply(data, op)
        return bytes(data)

    def statistics(self) -> dict[str, int]:
        kinds: dict[str, int] = {}
        for op in self.ops:
            kinds[op[0]] = kinds.get(op[0], 0) + 1
        return {"ops": len(self.ops), "inodes": len(self._inodes), **kinds}


def _last_before(indexes: list[int], cut: int) -> int:
    """The last of the sorted `indexes` below `cut`, or -1."""
    position = bisect.bisect_left(indexes, cut)
    return indexes[position - 1] if position else -1


def _apply(data: bytearray, op: Op) -> None:
    if op[0] == TRUNCATE:
        size = op[2]
        if size < len(data):
            del data[size:]
        else:
            data.extend(bytes(size - len(data)))
        return
    offset, chunk = op[2], op[3]
    if offset > len(data):
        data.extend(bytes(offset - len(data)))
    data[offset : offset + len(chunk)] = chunk
