"""Resumable builds: the records an indexer received, kept in completed shards until the index is published.

Encoding is the long part of a build. While a build runs, each record that reaches the indexer (docno + its
representation, as the encoder produced it) is also appended to the current shard of a partial build beside the
index; a shard counts once its ``shard-<n>.json`` (its docnos' count and checksum) is written, atomically, after its
records are on disk. A build that is killed or interrupted leaves its completed shards; the next build with the same
key (the index kind, its options and the generation it extends) takes them as already done, so only the records
after them are encoded, then every record is replayed from the shards into the index writer in input order. The
writer sees the very stream an uninterrupted build gives it, so the published index is the same, byte for byte.
The partial build is removed once the index is published.

    <index>/partial-<key>/
      partial.json         the key, the encoder settings and the shard size
      shard-000000.rec     pickled chunks of records (a shard's records, in input order)
      shard-000000.json    written last: the shard is complete (its count, docnos and a checksum of its records)
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import zlib
from pathlib import Path
from typing import Iterator

from .storage import PARTIAL_PREFIX, fault_point, remove_tree, write_atomically

__all__ = ["ShardStore"]


def _digest(key: dict) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


class ShardStore:
    """The partial build of one index and key (see the module docstring). Used under the index's write lock."""

    def __init__(self, index_path: str | os.PathLike, key: dict, shard_size: int):
        self.key, self.shard_size = key, shard_size
        self.dir = Path(index_path) / f"{PARTIAL_PREFIX}{_digest({**key, 'shard_size': shard_size})}"
        self.shards: list[dict] = []     # the completed shards' records: count, docnos, crc32
        self.encoder = None
        self._file = None
        self._current: list[str] = []
        self._crc = 0

    # ---- opening -------------------------------------------------------------------------------------------------
    def open(self) -> int:
        """Load the completed shards of an earlier run with this key (removing any other partial build of the
        index and the unfinished shard); returns how many records they hold."""
        for other in self.dir.parent.glob(f"{PARTIAL_PREFIX}*"):
            if other != self.dir:
                remove_tree(other)   # a build with other options: it will not resume
        meta = self.dir / "partial.json"
        if meta.exists():
            self.encoder = json.loads(meta.read_text()).get("encoder")
            n = 0
            while (self.dir / f"shard-{n:06d}.json").exists():
                self.shards.append(json.loads((self.dir / f"shard-{n:06d}.json").read_text()))
                n += 1
            for leftover in self.dir.glob("shard-*"):   # the shard a kill interrupted, and anything after it
                if int(leftover.name[6:12]) >= n:
                    leftover.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.set_encoder(self.encoder)
        return self.done

    @property
    def done(self) -> int:
        return sum(s["count"] for s in self.shards)

    def docno(self, i: int) -> str:
        """The docno of completed record ``i``."""
        shard = self.shards[i // self.shard_size]
        return shard["docnos"][i % self.shard_size]

    def set_encoder(self, encoder) -> None:
        """Record the settings of the encoder that made the records (with the key, in ``partial.json``)."""
        self.encoder = encoder
        write_atomically(self.dir / "partial.json", json.dumps({"key": self.key, "shard_size": self.shard_size,
                                                                "encoder": encoder}, default=str).encode())

    # ---- writing -------------------------------------------------------------------------------------------------
    def add(self, records: list[dict]) -> None:
        """Append records (in input order) to the current shard, completing shards as they fill."""
        while records:
            if self._file is None:
                self._file = open(self.dir / f"shard-{len(self.shards):06d}.rec", "wb")
            room = self.shard_size - len(self._current)
            part, records = records[:room], records[room:]
            data = pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)
            self._file.write(len(data).to_bytes(8, "little") + data)
            self._crc = zlib.crc32(data, self._crc)
            self._current.extend(r["docno"] for r in part)
            if len(self._current) == self.shard_size:
                self._complete()

    def finish(self) -> None:
        """Complete the last, shorter shard (if any)."""
        if self._current:
            self._complete()

    def _complete(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        n = len(self.shards)
        shard = {"count": len(self._current), "docnos": self._current, "crc32": self._crc}
        write_atomically(self.dir / f"shard-{n:06d}.json", json.dumps(shard).encode())
        self.shards.append(shard)
        self._current, self._crc = [], 0
        fault_point(f"after_shard_{n}")

    # ---- reading back --------------------------------------------------------------------------------------------
    def records(self) -> Iterator[list[dict]]:
        """Every completed record, shard by shard, in the chunks they were added in. A shard whose bytes do not
        match the checksum recorded when it completed is an error naming it, raised at the end of that shard: the
        build it feeds fails before publishing anything."""
        for n, shard in enumerate(self.shards):
            path = self.dir / f"shard-{n:06d}.rec"
            crc, count = 0, 0
            with open(path, "rb") as f:
                while header := f.read(8):
                    data = f.read(int.from_bytes(header, "little"))
                    crc = zlib.crc32(data, crc)
                    try:
                        chunk = pickle.loads(data)
                    except Exception:
                        break
                    count += len(chunk)
                    yield chunk
            if crc != shard["crc32"] or count != shard["count"]:
                raise ValueError(f"{path} does not match the shard recorded when it completed (a corrupt partial "
                                 f"build); remove {self.dir} and index again")

    def discard(self) -> None:
        """Remove the partial build (after publishing, or when it cannot be resumed)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        remove_tree(self.dir)
        self.shards, self._current, self._crc = [], [], 0

    def close(self) -> None:
        """Leave the partial build (interrupted): completed shards stay for the next run; with none, nothing does."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self.shards:
            self.discard()
