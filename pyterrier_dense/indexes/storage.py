"""The one storage helper every index kind uses: a versioned manifest, checksummed arrays, atomic publish.

An index is a directory whose ``pt_meta.json`` is both PyTerrier's artifact metadata (``type``, ``format``, so
``pt.Artifact.load(path)`` opens it) and our manifest (format version, counts, shapes, settings, per-file sizes and
CRC32s). It is built in ``<path>.tmp-<pid>-<token>`` and renamed into place only once complete, so a crash or Ctrl-C at any
moment leaves either no index or the previous one, never a half-written directory that looks whole.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import uuid
import zlib
from pathlib import Path

import numpy as np

__all__ = ["FORMAT_VERSION", "IndexBuild", "ArrayWriter", "load_manifest", "open_array", "verify_files",
           "CorruptIndexError"]

FORMAT_VERSION = 1
META_FILE = "pt_meta.json"
_READ_CHUNK = 1 << 22


class CorruptIndexError(ValueError):
    """An index directory exists but does not match its manifest."""


def _crc32_of(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ArrayWriter:
    """Appends rows of a fixed dtype and row shape to a raw file, keeping a running CRC32 and row count."""

    def __init__(self, path: Path, dtype: str, row_shape: tuple[int, ...]):
        self.path, self.dtype, self.row_shape = path, np.dtype(dtype), tuple(row_shape)
        self.rows, self.crc = 0, 0
        self._file = open(path, "wb")

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {rows.shape[1:]} given to {self.path.name}, which holds rows of shape {self.row_shape}")
        data = rows.tobytes()
        self._file.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.rows += len(rows)

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


class IndexBuild:
    """Builds an index directory atomically.

    ``mode="error"`` refuses to replace an existing index; ``mode="overwrite"`` replaces it only once the new one is
    complete. Files go into ``build.tmp``; ``publish(manifest)`` writes ``pt_meta.json`` and renames into place.
    Leaving the ``with`` block by an exception (Ctrl-C included) removes the temporary directory.

    Example::

        with IndexBuild("my.index", artifact_type="dense_index", artifact_format="x") as build:
            w = build.array_writer("vecs.f4", "float32", (384,)); w.append(vectors)
            build.publish({"count": w.rows})
    """

    def __init__(self, path: str | os.PathLike, *, artifact_type: str, artifact_format: str, mode: str = "error"):
        if mode not in ("error", "overwrite"):
            raise ValueError(f"mode must be 'error' or 'overwrite', got {mode!r}")
        self.path = Path(path)
        self.artifact_type, self.artifact_format, self.mode = artifact_type, artifact_format, mode
        # pid (to recognise the leftovers of dead builds) + a token (two builds of one process never share it)
        self._suffix = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp = self.path.parent / f"{self.path.name}.tmp-{self._suffix}"
        self._writers: dict[str, ArrayWriter] = {}
        self.published = False

    def __enter__(self) -> "IndexBuild":
        if self.path.exists() and self.mode == "error":
            raise FileExistsError(f"{self.path} already exists; pass mode='overwrite' to replace it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_builds()
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        return self

    def _remove_stale_builds(self) -> None:
        """Remove what builds of dead processes left: temporary directories, and replaced indexes not yet removed."""
        for kind in ("tmp", "old"):
            for leftover in self.path.parent.glob(f"{self.path.name}.{kind}-*"):
                pid = leftover.name.rsplit(f".{kind}-", 1)[-1].split("-")[0]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    shutil.rmtree(leftover, ignore_errors=True)

    def array_writer(self, name: str, dtype: str, row_shape: tuple[int, ...]) -> ArrayWriter:
        writer = ArrayWriter(self.tmp / name, dtype, row_shape)
        self._writers[name] = writer
        return writer

    def publish(self, manifest: dict) -> Path:
        """Write the manifest (with every file's size and CRC32) and move the directory into place."""
        files = {}
        for name in sorted(os.listdir(self.tmp)):
            full = self.tmp / name
            writer = self._writers.get(name)
            if writer is not None:
                writer.close()
                crc = writer.crc
            else:
                crc = _crc32_of(full)
            files[name] = {"bytes": full.stat().st_size, "crc32": crc}
        from .. import __version__
        meta = {"type": self.artifact_type, "format": self.artifact_format, "format_version": FORMAT_VERSION,
                "package_version": __version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                **manifest, "files": files}
        with open(self.tmp / META_FILE, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if self.path.exists() and self.mode == "error":
            raise FileExistsError(f"{self.path} appeared while this index was being built; pass mode='overwrite' to replace it")
        if self.path.exists():
            old = self.path.parent / f"{self.path.name}.old-{self._suffix}"
            os.replace(self.path, old)
            os.replace(self.tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)
        self.published = True
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        for writer in self._writers.values():
            writer._file.close()
        if not self.published and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)


def _leftover_hint(path: Path) -> str:
    """What an interrupted build left beside a missing index, and what to do about it ('' if nothing)."""
    if not path.parent.exists():
        return ""
    replaced = sorted(path.parent.glob(f"{path.name}.old-*"))
    if replaced:
        return (f" (a build was killed while replacing it: {replaced[0].name} holds the previous index; "
                f"rename it back to {path.name})")
    leftovers = sorted(path.parent.glob(f"{path.name}.tmp-*"))
    if leftovers:
        return f" (an interrupted build left {leftovers[0].name}; build the index again)"
    return ""


def load_manifest(path: str | os.PathLike, artifact_type: str, artifact_format: str) -> dict:
    """Read and check an index's manifest; every problem is an error that names the path and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no index at {path}{_leftover_hint(path)}")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not an index directory")
    meta_path = path / META_FILE
    if not meta_path.exists():
        raise CorruptIndexError(f"{path} is not a pyterrier-dense index: it has no {META_FILE}")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptIndexError(f"{meta_path} is corrupt: {e}") from None
    if not isinstance(meta, dict) or (meta.get("type"), meta.get("format")) != (artifact_type, artifact_format):
        found = f"{meta.get('type')}.{meta.get('format')}" if isinstance(meta, dict) else type(meta).__name__
        raise CorruptIndexError(f"{path} holds a {found} artifact, not a {artifact_type}.{artifact_format}")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CorruptIndexError(f"{path} has format_version {version!r}; this pyterrier-dense reads up to {FORMAT_VERSION}: upgrade the package")
    for name, info in meta.get("files", {}).items():
        full = path / name
        if not full.exists():
            raise CorruptIndexError(f"{path} is missing {name}, which its manifest lists")
        size = full.stat().st_size
        if size != info["bytes"]:
            raise CorruptIndexError(f"{full} is {size} bytes but the manifest says {info['bytes']}: the index is corrupt")
    return meta


def verify_files(path: str | os.PathLike, meta: dict) -> None:
    """Recompute every file's CRC32 and compare with the manifest (reads all bytes once)."""
    path = Path(path)
    for name, info in meta.get("files", {}).items():
        crc = _crc32_of(path / name)
        if crc != info["crc32"]:
            raise CorruptIndexError(f"{path / name} fails its checksum (crc32 {crc} != {info['crc32']}): the index is corrupt")


def open_array(path: Path, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Memory-map a raw array file read-only (an empty array for zero rows)."""
    if shape[0] == 0:
        return np.empty(shape, dtype=dtype)
    # a plain ndarray view of the map: slicing it skips np.memmap's per-slice Python overhead
    return np.asarray(np.memmap(path, dtype=dtype, mode="r", shape=shape))
