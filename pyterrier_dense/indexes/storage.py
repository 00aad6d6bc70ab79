"""The one storage helper every index kind uses: immutable generations, one atomic pointer, locks, checksums.

An index is a directory::

    scifact.dense/
      pt_meta.json        PyTerrier's artifact metadata (type, format) + our manifest + the current generation
      .write.lock         held (flock) by the one process that is writing a new generation
      g000002-1f3a9c0e/   a complete, never modified build: its array files, and .readers (flock'd by readers)

A build writes a new generation in ``build-<token>/``, renames it to ``g<seq>-<token>/`` and then swaps
``pt_meta.json`` with one ``os.replace``: a reader sees the old generation or the new one, never a mix, and a kill
at any moment leaves the index readable at its path. Writers exclude each other with ``.write.lock`` held for the
whole build (an append reads the index it extends only once it holds the lock, so concurrent appends all land).
A reader resolves the pointer once and holds a shared lock on its generation's ``.readers`` file for as long as it
uses it; a writer removes an old generation only when it can take that lock exclusively, i.e. when no reader of any
process holds it (Lucene's commit points work the same way).
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
import weakref
import zlib
from pathlib import Path

import numpy as np

__all__ = ["FORMAT_VERSION", "IndexBuild", "IndexReader", "ArrayWriter", "CorruptIndexError", "IndexExistsError",
           "IndexLockedError", "open_reader", "write_atomically", "file_lock", "fault_point", "crc32_of"]

log = logging.getLogger("pyterrier_dense")

FORMAT_VERSION = 2
META_FILE = "pt_meta.json"
LOCK_FILE = ".write.lock"
READERS_FILE = ".readers"
BUILDER_FILE = ".builder.json"
_READ_CHUNK = 1 << 22
FAULT_ENV = "PYTERRIER_DENSE_FAULT"
PARTIAL_PREFIX = "partial-"   # a resumable build's completed shards (indexes/shards.py)


class CorruptIndexError(ValueError):
    """An index directory exists but does not match its manifest."""


class IndexExistsError(FileExistsError):
    """An index is already at the path and the build was asked not to replace it."""

    def __init__(self, path: Path, message: str):
        super().__init__(message)
        self.path = path


class IndexLockedError(TimeoutError):
    """Another process holds the index's write lock and did not release it within the timeout."""


def fault_point(phase: str) -> None:
    """Tests inject a crash at a named phase of a build: ``PYTERRIER_DENSE_FAULT=<phase>`` kills the process there
    (``os._exit``: no cleanup runs, as with SIGKILL or a power cut)."""
    if os.environ.get(FAULT_ENV) == phase:
        os._exit(99)


def crc32_of(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _host_id() -> str:
    return socket.gethostname()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, fault: str = "") -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: never a half-written file there."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if fault:
            fault_point(fault)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_HELD: set[tuple] = set()   # (lock file, thread) pairs held by this process; other threads wait on the flock


class file_lock:
    """An exclusive ``flock`` on ``path`` (created if needed) for a ``with`` block; the owner's host, pid and start
    time are written into the file so a waiting process can say who holds it. ``timeout=None`` waits."""

    def __init__(self, path: Path, *, timeout: float | None = None, what: str = ""):
        self.path, self.timeout, self.what = Path(path), timeout, what or str(path)
        self._fd: int | None = None

    def __enter__(self) -> "file_lock":
        key = (os.path.abspath(self.path), threading.get_ident())
        if key in _HELD:   # this thread holds it already: waiting for it here would never end
            raise IndexLockedError(f"{self.what} is already being written by this thread; finish that build first")
        started, announced = time.monotonic(), False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                waited = time.monotonic() - started
                if self.timeout is not None and waited >= self.timeout:
                    raise IndexLockedError(f"{self.what} is locked by {self.holder()}; gave up after {waited:.1f} s "
                                           "(wait longer with lock_timeout=None)") from None
                if not announced:
                    log.warning("waiting for %s, locked by %s", self.what, self.holder())
                    announced = True
                time.sleep(0.05)
                continue
            # the file may have been removed (with its directory) by the previous holder: lock the one at the path
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"host": _host_id(), "pid": os.getpid(),
                                     "since": datetime.datetime.now().isoformat(timespec="seconds")}).encode())
            self._fd = fd
            _HELD.add(key)
            return self

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
            return f"pid {info['pid']} on host {info['host']} since {info['since']}"
        except (OSError, ValueError, KeyError):
            return "another process"

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing releases the flock
            self._fd = None
            _HELD.discard((os.path.abspath(self.path), threading.get_ident()))


class ArrayWriter:
    """Appends rows of a fixed dtype and row shape to a raw file, keeping a running CRC32 and row count."""

    def __init__(self, path: Path, dtype: str, row_shape: tuple[int, ...]):
        self.path, self.dtype, self.row_shape = path, np.dtype(dtype), tuple(row_shape)
        self.rows, self.crc = 0, 0
        self._row_bytes = int(self.dtype.itemsize * np.prod(self.row_shape, dtype=np.int64))
        self._file = open(path, "wb")

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {rows.shape[1:]} given to {self.path.name}, which holds rows of shape {self.row_shape}")
        self.append_bytes(rows.tobytes())

    def append_bytes(self, data: bytes) -> None:
        """Raw bytes of whole rows (as copied from another file of this dtype and row shape)."""
        if self._row_bytes and len(data) % self._row_bytes:
            raise ValueError(f"{len(data)} bytes are not whole rows of {self.path.name}")
        self._file.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.rows += len(data) // self._row_bytes if self._row_bytes else 0

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def _read_meta(path: Path) -> dict:
    meta_path = path / META_FILE
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptIndexError(f"{meta_path} is corrupt: {e}") from None
    if not isinstance(meta, dict):
        raise CorruptIndexError(f"{meta_path} holds a {type(meta).__name__}, not an index manifest")
    return meta


def _ours(name: str) -> bool:
    """Whether a name in an index directory is one this storage writes."""
    prefixes = ("build-", PARTIAL_PREFIX, ".discarded-", f"{META_FILE}.tmp-")
    return name in (LOCK_FILE, META_FILE) or name.startswith(prefixes) or is_generation(name)


def is_generation(name: str) -> bool:
    return re.fullmatch(r"g\d{6}-[0-9a-f]{8}", name) is not None


def _generation_seq(name: str | None) -> int:
    try:
        return int(str(name)[1:].split("-")[0])
    except (TypeError, ValueError):
        return 0


class IndexReader:
    """One generation of an index, pinned: its manifest and files stay valid for this object's whole life.

    A shared lock on the generation's ``.readers`` file tells writers of every process not to remove it. Readers are
    shared within a process (:func:`open_reader`), so decoded docnos and memory maps are made once per generation.
    """

    def __init__(self, path: Path, directory: Path, meta: dict, lock_fd: int | None):
        self.path, self.directory, self.meta = path, directory, meta
        self._lock_fd = lock_fd
        self.cache: dict = {}   # per-generation derived data (memory maps, decoded docnos) kept by index kinds
        self._snapshot = None
        if lock_fd is not None:
            self._finalizer = weakref.finalize(self, os.close, lock_fd)

    @property
    def generation(self) -> str:
        return self.directory.name

    def file(self, name: str) -> Path:
        return self.directory / name

    def snapshot(self, make):
        """The index kind's view of this generation (``make(reader)``), shared while anyone holds it. It is kept
        by a weak reference, so the pin ends as soon as the last user lets go (no reference cycle to collect)."""
        snap = self._snapshot() if self._snapshot is not None else None
        if snap is None:
            snap = make(self)
            self._snapshot = weakref.ref(snap)
        return snap

    def verify(self) -> None:
        """Recompute every file's CRC32 and compare with the manifest (reads all bytes once)."""
        for name, info in self.meta.get("files", {}).items():
            crc = crc32_of(self.directory / name)
            if crc != info["crc32"]:
                raise CorruptIndexError(f"{self.directory / name} fails its checksum (crc32 {crc} != {info['crc32']}): "
                                        "the index is corrupt")


_READERS: "weakref.WeakValueDictionary[tuple, IndexReader]" = weakref.WeakValueDictionary()


def _missing_hint(path: Path) -> str:
    if path.is_dir() and any(p.name.startswith("build-") or is_generation(p.name) for p in path.iterdir()):
        return " (a build was interrupted before it completed; build the index again)"
    return ""


def meta_stamp(path: Path):
    """What changes when the index at ``path`` gets a new generation (the pointer file's identity), or None."""
    try:
        st = os.stat(Path(path) / META_FILE)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def open_reader(path: str | os.PathLike, artifact_type: str, artifact_format: str) -> IndexReader:
    """Resolve the index's current generation once, pin it, and check its manifest and file sizes.

    Every problem is an error naming the path and what is wrong."""
    path = Path(path)
    for _ in range(100):
        if not path.exists():
            raise FileNotFoundError(f"no index at {path}")
        if not path.is_dir():
            raise NotADirectoryError(f"{path} is a file, not an index directory")
        if not (path / META_FILE).exists():
            hint = _missing_hint(path)
            if hint:
                raise FileNotFoundError(f"no index at {path}{hint}")
            raise CorruptIndexError(f"{path} is not a pyterrier-dense index: it has no {META_FILE}")
        stamp = meta_stamp(path)
        meta = _read_meta(path)
        if (meta.get("type"), meta.get("format")) != (artifact_type, artifact_format):
            raise CorruptIndexError(f"{path} holds a {meta.get('type')}.{meta.get('format')} artifact, not a "
                                    f"{artifact_type}.{artifact_format}")
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CorruptIndexError(f"{path} has format_version {version!r}; this pyterrier-dense reads up to "
                                    f"{FORMAT_VERSION}: upgrade the package")
        if version < FORMAT_VERSION:
            raise CorruptIndexError(f"{path} was written by an older pyterrier-dense (format {version}); rebuild it "
                                    "(indexer(mode='overwrite'))")
        generation = meta.get("generation")
        directory = path / generation if generation else path   # no pointer: a generation copied out on its own
        key = (str(directory.resolve()), stamp if not generation else None)
        cached = _READERS.get(key)
        if cached is not None:
            _check_files(directory, meta)   # a few stats: damage done since it was opened is still reported
            return cached
        fd = None
        readers = directory / READERS_FILE
        try:
            fd = os.open(readers, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_SH)
        except FileNotFoundError:
            if fd is not None:
                os.close(fd)
            continue          # a writer removed this generation after we read the pointer: read it again
        except OSError:
            if fd is not None:
                os.close(fd)
            fd = None         # a filesystem without locks, or no permission: read without pinning
        if fd is not None and not readers.exists():
            os.close(fd)
            continue          # removed while we waited for the lock
        _check_files(directory, meta)
        reader = IndexReader(path, directory, meta, fd)
        _READERS[key] = reader
        return reader
    raise CorruptIndexError(f"{path} keeps changing under the reader; could not pin a generation")


def _check_files(directory: Path, meta: dict) -> None:
    for name, info in meta.get("files", {}).items():
        full = directory / name
        if not full.exists():
            raise CorruptIndexError(f"{directory} is missing {name}, which its manifest lists")
        size = full.stat().st_size
        if size != info["bytes"]:
            raise CorruptIndexError(f"{full} is {size} bytes but the manifest says {info['bytes']}: the index is corrupt")


class IndexBuild:
    """Builds a new generation of an index and publishes it atomically.

    ``mode="error"`` refuses an existing index; ``"overwrite"`` replaces it; ``"append"`` also replaces it, and
    ``current`` is the generation being extended (read under the write lock, so no concurrent build is lost).
    Files go into ``build.tmp``; ``publish(manifest)`` checksums them, writes the manifest and swaps the pointer.
    Leaving the ``with`` block by an exception (Ctrl-C included) removes the unfinished build.

    Example::

        with IndexBuild("my.index", artifact_type="dense_index", artifact_format="x") as build:
            w = build.array_writer("vecs.f4", "float32", (384,)); w.append(vectors)
            build.publish({"count": w.rows})
    """

    def __init__(self, path: str | os.PathLike, *, artifact_type: str, artifact_format: str, mode: str = "error",
                 lock_timeout: float | None = None):
        if mode not in ("error", "overwrite", "append"):
            raise ValueError(f"mode must be 'error', 'overwrite' or 'append', got {mode!r}")
        self.path = Path(path)
        self.artifact_type, self.artifact_format, self.mode = artifact_type, artifact_format, mode
        self.token = uuid.uuid4().hex[:8]
        self.tmp = self.path / f"build-{self.token}"
        self.current: IndexReader | None = None
        self._writers: dict[str, ArrayWriter] = {}
        self._lock = file_lock(self.path / LOCK_FILE, timeout=lock_timeout, what=f"index {self.path}")
        self._created_dir = False
        self.published = False

    def __enter__(self) -> "IndexBuild":
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"{self.path} is a file, not an index directory")
        self._refuse_foreign()   # before creating anything in a directory that is not ours
        self._created_dir = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock.__enter__()
        try:
            exists = (self.path / META_FILE).exists()
            self._refuse_foreign()
            if exists and self.mode == "error":
                raise IndexExistsError(self.path, f"{self.path} already exists; pass mode='overwrite' to replace it "
                                       "or mode='append' to add documents to it")
            self._sweep()
            if exists and self.mode == "append":
                self.current = open_reader(self.path, self.artifact_type, self.artifact_format)
            self.tmp.mkdir()
            (self.tmp / BUILDER_FILE).write_text(json.dumps({"host": _host_id(), "pid": os.getpid()}))
        except BaseException:
            self._release(failed=True)
            raise
        return self

    def _refuse_foreign(self) -> None:
        if not self.path.is_dir() or (self.path / META_FILE).exists():
            return
        foreign = [p.name for p in self.path.iterdir() if not _ours(p.name)]
        if foreign:
            raise IndexExistsError(self.path, f"{self.path} is a directory that is not an index (it holds "
                                   f"{sorted(foreign)[:3]}); choose another path")

    def _sweep(self) -> None:
        """Under the write lock: remove unfinished builds of this host (their builders are dead, as we hold the
        lock) and generations that are neither current nor pinned by a reader. Another host's unfinished build is
        left alone: on a shared filesystem we cannot tell whether it is alive."""
        current = None
        if (self.path / META_FILE).exists():
            try:
                current = _read_meta(self.path).get("generation")
            except CorruptIndexError:
                current = None
        for entry in self.path.iterdir():
            if entry.name.startswith(f"{META_FILE}.tmp-"):
                entry.unlink(missing_ok=True)   # a pointer a killed build never swapped in
            elif entry.name.startswith(".discarded-"):
                shutil.rmtree(entry, ignore_errors=True)   # a partial build whose removal a kill interrupted
            elif entry.name.startswith("build-") and entry.is_dir():
                try:
                    host = json.loads((entry / BUILDER_FILE).read_text()).get("host")
                except (OSError, ValueError):
                    host = _host_id()   # killed before it wrote its builder file
                if host == _host_id():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    log.warning("leaving %s: an unfinished build by host %s (remove it if that build is dead)",
                                entry, host)
            elif entry.is_dir() and is_generation(entry.name) and entry.name != current:
                _remove_if_unread(entry)

    def array_writer(self, name: str, dtype: str, row_shape: tuple[int, ...]) -> ArrayWriter:
        writer = ArrayWriter(self.tmp / name, dtype, row_shape)
        self._writers[name] = writer
        return writer

    def copy_current(self, name: str, writer: ArrayWriter, block: int = 1 << 24) -> None:
        """Append file ``name`` of the generation being extended to ``writer``, checking its CRC32 against the
        manifest as it streams: a corrupt base fails the append instead of spreading into the new generation."""
        src = self.current.file(name)
        expected = self.current.meta["files"][name]["crc32"]
        crc = 0
        with open(src, "rb") as f:
            while chunk := f.read(block):
                crc = zlib.crc32(chunk, crc)
                writer.append_bytes(chunk)
        if crc != expected:
            raise CorruptIndexError(f"{src} fails its checksum while being copied into a new generation: the index "
                                    "is corrupt; rebuild it")

    def publish(self, manifest: dict) -> Path:
        """Checksum the files, write the manifest, and make this build the index's current generation."""
        fault_point("before_manifest")
        files = {}
        for name in sorted(os.listdir(self.tmp)):
            full = self.tmp / name
            if name.startswith(".") or full.is_dir():
                continue
            writer = self._writers.get(name)
            if writer is not None:
                writer.close()
                crc = writer.crc
            else:
                crc = crc32_of(full)
            files[name] = {"bytes": full.stat().st_size, "crc32": crc}
        seq = _generation_seq(self.current.generation if self.current else None)
        previous = {}
        if (self.path / META_FILE).exists():
            try:
                previous = _read_meta(self.path)
                seq = max(seq, _generation_seq(previous.get("generation")))
            except CorruptIndexError:
                pass
        generation = f"g{seq + 1:06d}-{self.token}"
        from .. import __version__
        meta = {"type": self.artifact_type, "format": self.artifact_format, "format_version": FORMAT_VERSION,
                "package_version": __version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                **manifest, "files": files}
        (self.tmp / READERS_FILE).touch()
        write_atomically(self.tmp / META_FILE, json.dumps(meta, indent=1).encode())   # the generation alone is an index
        (self.tmp / BUILDER_FILE).unlink()
        _fsync_dir(self.tmp)
        fault_point("after_manifest")
        os.replace(self.tmp, self.path / generation)
        _fsync_dir(self.path)
        fault_point("after_rename")
        write_atomically(self.path / META_FILE, json.dumps({**meta, "generation": generation}, indent=1).encode(),
                         fault="during_swap")
        _fsync_dir(self.path)
        self.published = True
        fault_point("after_swap")
        if previous and not previous.get("generation"):   # it replaced a flat index (an older format, or a copy)
            for name in previous.get("files", {}):
                if not _ours(name):
                    (self.path / name).unlink(missing_ok=True)
        self.current = None
        for partial in self.path.glob(f"{PARTIAL_PREFIX}*"):   # a published index supersedes interrupted builds
            remove_tree(partial)
        self._sweep()
        return self.path

    def _release(self, failed: bool) -> None:
        for writer in self._writers.values():
            writer._file.close()
        if not self.published and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.current = None
        if failed and self._created_dir and not (self.path / META_FILE).exists() \
                and not any(self.path.glob(f"{PARTIAL_PREFIX}*")):   # (a resumable build's shards stay)
            shutil.rmtree(self.path, ignore_errors=True)   # a first build that failed leaves nothing behind
        self._lock.__exit__()

    def __exit__(self, exc_type, exc, tb) -> None:
        self._release(failed=not self.published)


def remove_tree(directory: Path) -> None:
    """Remove a directory of an index by first renaming it aside (``.discarded-*``, swept by the next build if a
    kill interrupts the removal): nothing ever sees it half removed under its name."""
    if directory.exists():
        gone = directory.with_name(f".discarded-{uuid.uuid4().hex[:8]}")
        os.replace(directory, gone)
        shutil.rmtree(gone, ignore_errors=True)


def _remove_if_unread(generation: Path) -> bool:
    """Remove an old generation unless a reader (of any process) holds its ``.readers`` lock."""
    readers = generation / READERS_FILE
    try:
        fd = os.open(readers, os.O_RDONLY)
    except FileNotFoundError:
        shutil.rmtree(generation, ignore_errors=True)   # never completed
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        shutil.rmtree(generation, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def map_array(reader: IndexReader, name: str, dtype, shape_tail: tuple = ()) -> np.ndarray:
    """File ``name`` of a pinned generation as a read-only array of rows of shape ``shape_tail`` (a plain ndarray
    view of a memory map; an empty array for an empty file, which cannot be mapped)."""
    size = reader.meta["files"][name]["bytes"]
    if size == 0:
        return np.empty((0, *shape_tail), dtype)
    itemsize = np.dtype(dtype).itemsize * int(np.prod(shape_tail, dtype=np.int64))
    return np.asarray(np.memmap(reader.file(name), dtype=dtype, mode="r", shape=(size // itemsize, *shape_tail)))


def settings_digest(settings: dict) -> str:
    """A short stable digest of a JSON-able dict (for cache file names)."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
