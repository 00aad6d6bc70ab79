"""Token vectors on disk (late interaction, ColBERT), without PyTerrier: one pinned generation to read
(:class:`TokenSnapshot`) and a writer that streams documents' token matrices into a new one (:class:`TokenIndexWriter`).

A generation holds, beside the docnos::

    token.off        int64 (count + 1): document j owns tokens [off[j], off[j+1])
    codes.i4         int32 (tokens,): each token's nearest centroid (candidate generation, and the residual's base)
    centroids.f4     float32 (ncentroids, dim)
    embs.f2          float16 (tokens, dim)                      storage="float16"
    residuals.u1     uint8 (tokens, dim * nbits / 8)            storage="residual": ColBERTv2 1- or 2-bit residuals
    cutoffs.f4, weights.f4                                      ... and their per-dimension buckets
    ivf.off, ivf.docs.i4   for each centroid, the documents with a token assigned to it (PLAID's inverted file)
    token_counts.i8  how many stored tokens have each token id (query pruning by inverse collection frequency)

Indexing streams: token matrices go to a float16 staging file as they arrive (memory does not grow with the
collection) while a reservoir keeps a bounded uniform sample of tokens; once the stream ends, k-means on that sample
gives the centroids, and one pass over the staging file writes codes (and residuals). An append keeps the centroids
and buckets of the index it extends, so stored codes stay valid and nothing is re-encoded.
"""
from __future__ import annotations

import os

import numpy as np

from .docnos import DATA_FILE, OFFSETS_FILE, DocnoWriter, Docnos
from .residual_codec import ResidualCodec, suggest_ncentroids
from .storage import CorruptIndexError, IndexBuild, IndexReader, map_array, open_reader
from .token_ivf import build_ivf
from .vector_index import encoder_differences

__all__ = ["TokenSnapshot", "TokenIndexWriter", "open_tokens", "TYPE", "FORMAT", "STORAGES", "SAMPLE_BYTES",
           "DOC_SIDE_KEYS"]

TYPE, FORMAT = "colbert_index", "pyterrier_dense"
STORAGES = ("float16", "residual")
SAMPLE_BYTES = 1 << 26     # float32 bytes of the token sample k-means trains on: 64 MiB whatever the collection
PASS_TOKENS = 1 << 16      # tokens compressed at once in the final pass
STAGING = "staging.f2"
# encoder settings that change only document vectors: a query encoder need not share them with the index
DOC_SIDE_KEYS = ("doc_length", "doc_marker", "skiplist", "whole_word", "drop_stopwords")


class TokenSnapshot:
    """One generation of a token index, pinned for this object's life."""

    def __init__(self, reader: IndexReader):
        self.reader, self.manifest = reader, reader.meta
        m = self.manifest
        self.path, self.count, self.dim, self.tokens = reader.path, m["count"], m["dim"], m["tokens"]
        self.storage, self.nbits, self.ncentroids = m["storage"], m.get("nbits"), m["ncentroids"]
        files = m["files"]
        if files.get("token.off", {}).get("bytes") != 8 * (self.count + 1):
            raise CorruptIndexError(f"{self.path}: token.off does not hold {self.count + 1} offsets")
        if files.get(OFFSETS_FILE, {}).get("bytes") != 8 * (self.count + 1) or DATA_FILE not in files:
            raise CorruptIndexError(f"{self.path}: the docnos files do not hold {self.count} docnos")
        per_token = {"embs.f2": 2 * self.dim} if self.storage == "float16" else \
            {"residuals.u1": self.dim * (self.nbits or 0) // 8}
        if self.ncentroids:
            per_token["codes.i4"] = 4
        for name, size in per_token.items():
            if files.get(name, {}).get("bytes") != size * self.tokens:
                raise CorruptIndexError(f"{self.path}: {name} takes {files.get(name, {}).get('bytes')} bytes, but "
                                        f"{self.tokens} tokens need {size * self.tokens}")
        self._maps: dict[str, np.ndarray] = {}
        self._codec = None

    def _map(self, name: str, dtype, shape_tail: tuple = ()) -> np.ndarray:
        if name not in self._maps:
            self._maps[name] = map_array(self.reader, name, dtype, shape_tail)
        return self._maps[name]

    @property
    def encoder_settings(self) -> dict | None:
        return self.manifest.get("encoder")

    @property
    def docnos(self) -> Docnos:
        return Docnos.of(self.reader)

    @property
    def offsets(self) -> np.ndarray:
        return self._map("token.off", np.int64)

    @property
    def codes(self) -> np.ndarray:
        return self._map("codes.i4", np.int32)

    @property
    def codec(self) -> ResidualCodec | None:
        """Centroids and residual buckets; None for an index without tokens."""
        if self._codec is None and self.ncentroids:
            bits = self.manifest["codec_nbits"]
            arrays = {"centroids": self._map("centroids.f4", np.float32, (self.dim,)),
                      "cutoffs": self._map("cutoffs.f4", np.float32).reshape(self.dim, 2 ** bits - 1),
                      "weights": self._map("weights.f4", np.float32).reshape(self.dim, 2 ** bits)}
            self._codec = ResidualCodec.from_arrays(arrays, bits)
        return self._codec

    @property
    def ivf(self) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets, docs)``: centroid c's documents are ``docs[offsets[c]:offsets[c+1]]`` (ascending rows)."""
        return self._map("ivf.off", np.int64), self._map("ivf.docs.i4", np.int32)

    @property
    def token_counts(self) -> np.ndarray | None:
        """How many stored tokens have each token id (None when the indexed records carried no token ids)."""
        return self._map("token_counts.i8", np.int64) if "token_counts.i8" in self.manifest["files"] else None

    def token_range_vectors(self, start: int, stop: int) -> np.ndarray:
        """The stored tokens ``start:stop``: float16 rows as stored (a view of the memory map; MaxSim converts them
        with a fast decoder) or, for residual storage, decompressed float32."""
        if self.storage == "float16":
            return self._map("embs.f2", np.float16, (self.dim,))[start:stop]
        packed = self._map("residuals.u1", np.uint8, (self.dim * self.nbits // 8,))[start:stop]
        return self.codec.decompress(self.codes[start:stop], packed)

    def doc_tokens(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The token vectors of documents ``rows`` one after another (float16 as stored, or decompressed float32)
        and their offsets (len(rows) + 1)."""
        rows = np.asarray(rows, dtype=np.int64)
        off = self.offsets
        starts, stops = off[rows], off[rows + 1]
        out_off = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(stops - starts, out=out_off[1:])
        if self.storage == "float16":   # whole documents are runs of rows: copy slices, no per-token index
            embs = self._map("embs.f2", np.float16, (self.dim,))
            vecs = np.empty((int(out_off[-1]), self.dim), np.float16)
            for a, b, o in zip(starts.tolist(), stops.tolist(), out_off[:-1].tolist()):
                vecs[o:o + b - a] = embs[a:b]
            return vecs, out_off
        take = np.repeat(starts - out_off[:-1], stops - starts) + np.arange(out_off[-1])
        packed = self._map("residuals.u1", np.uint8, (self.dim * self.nbits // 8,))[take]
        return self.codec.decompress(self.codes[take], packed), out_off

    def bytes_per_token(self) -> float:
        """Bytes on disk a stored token takes (vectors or residuals, plus its centroid code)."""
        names = ("embs.f2", "residuals.u1", "codes.i4")
        total = sum(self.manifest["files"].get(n, {}).get("bytes", 0) for n in names)
        return total / self.tokens if self.tokens else 0.0

    def verify(self) -> None:
        self.reader.verify()


def open_tokens(path: str | os.PathLike) -> TokenSnapshot:
    """Pin the current generation of the token index at ``path`` (shared within the process)."""
    return open_reader(path, TYPE, FORMAT).snapshot(TokenSnapshot)


class _Reservoir:
    """A uniform sample of at most ``capacity`` rows of a stream (Algorithm R, vectorised per batch)."""

    def __init__(self, capacity: int, dim: int, seed: int):
        self.rows = np.empty((capacity, dim), np.float16)
        self.filled = self.seen = 0
        self.rng = np.random.default_rng(seed)

    def add(self, vecs: np.ndarray) -> None:
        cap = len(self.rows)
        take = min(cap - self.filled, len(vecs))
        if take:
            self.rows[self.filled:self.filled + take] = vecs[:take]
            self.filled += take
        rest = vecs[take:]
        if len(rest):
            slots = self.rng.integers(0, self.seen + take + 1 + np.arange(len(rest)))
            keep = slots < cap
            self.rows[slots[keep]] = rest[keep]
        self.seen += len(vecs)

    def sample(self) -> np.ndarray:
        return np.asarray(self.rows[:self.filled], dtype=np.float32)


class TokenIndexWriter:
    """Streams (docnos, token matrices) into a new generation of the token index at ``path``.

    ``storage="float16"`` (the default) keeps every token vector in float16; ``"residual"`` keeps ColBERTv2's centroid
    code plus an ``nbits`` (1 or 2, default 2) residual per dimension; an append keeps the index's unless told. ``ncentroids`` defaults to :func:`suggest_ncentroids` of the
    number of tokens. Modes as for every index: ``"error"``, ``"overwrite"``, ``"append"`` (keeps the stored
    tokens and the index's centroids; settings must match). Publishes atomically on a clean exit of the ``with``.

    Example::

        with TokenIndexWriter("x.colbert", storage="residual", nbits=2) as w:
            w.add(["d1", "d2"], [np.ones((3, 8), np.float32), np.ones((5, 8), np.float32)])
    """

    def __init__(self, path: str | os.PathLike, *, storage: str | None = None, nbits: int | None = None,
                 ncentroids: int | None = None, mode: str = "error", encoder: dict | None = None,
                 lock_timeout: float | None = None, seed: int = 0, progress: bool = False):
        if storage is not None and storage not in STORAGES:
            raise ValueError(f"storage must be one of {list(STORAGES)}, got {storage!r}")
        if nbits is not None and nbits not in (1, 2, 4):
            raise ValueError(f"nbits must be 1, 2 or 4 bits per dimension, got {nbits!r}")
        self._asked = (storage, nbits)   # None: float16 / 2 bits for a new index, what the index has for an append
        storage = storage or "float16"
        nbits = nbits or 2
        if ncentroids is not None and (isinstance(ncentroids, bool) or not isinstance(ncentroids, int) or ncentroids < 1):
            raise ValueError(f"ncentroids must be an int >= 1, got {ncentroids!r}")
        self.storage, self.nbits = storage, (nbits if storage == "residual" else None)
        self.ncentroids, self.seed, self.progress = ncentroids, seed, progress
        self.encoder, self._encoder_known = encoder, encoder is not None
        self.dim: int | None = (encoder or {}).get("dim")
        self._build = IndexBuild(path, artifact_type=TYPE, artifact_format=FORMAT, mode=mode,
                                 lock_timeout=lock_timeout)
        self.path = self._build.path
        self._offsets: list[np.ndarray] = []
        self._end = 0
        self._base_tokens = 0
        self._staging = self._docnos = self._reservoir = None
        self._counts: np.ndarray | None = None
        self._ids_given: bool | None = None
        self._codec: ResidualCodec | None = None
        self._writers: dict | None = None

    # ---- setup -------------------------------------------------------------------------------------------------
    def set_encoder(self, encoder: dict | None) -> None:
        """The settings of the encoder that made the token vectors (known once the first records arrive)."""
        if self._build.current is not None:
            self._check_appendable(self._build.current.meta, encoder)
        self.encoder, self._encoder_known = encoder, True
        if self.dim is None and encoder:
            self.dim = encoder.get("dim")

    def _check_appendable(self, m: dict, encoder: dict | None) -> None:
        if (self.storage, self.nbits) != (m["storage"], m.get("nbits")):
            raise ValueError(f"cannot append with storage={self.storage!r}, nbits={self.nbits} to {self.path}, "
                             f"which stores storage={m['storage']!r}, nbits={m.get('nbits')}")
        if self.dim is not None and self.dim != m["dim"]:
            raise ValueError(f"cannot append {self.dim}-dimensional token vectors to {self.path}, which holds "
                             f"{m['dim']}-dimensional ones")
        stored = m.get("encoder")
        if (stored is None) != (encoder is None):
            made = "by an encoder" if stored else "from token vectors given directly"
            raise ValueError(f"{self.path} was built {made}; append the same way")
        diffs = encoder_differences(stored, encoder or {}, keys=None)
        if diffs:
            raise ValueError(f"cannot append to {self.path}: it was built with another encoder configuration "
                             f"({'; '.join(diffs)})")

    def __enter__(self) -> "TokenIndexWriter":
        self._build.__enter__()
        try:
            current = self._build.current
            self._docnos = DocnoWriter(self._build)
            if current is not None:
                self.storage = self._asked[0] or current.meta["storage"]
                self.nbits = (self._asked[1] or current.meta.get("nbits") or 2) if self.storage == "residual" else None
                self._check_appendable(current.meta, self.encoder if self._encoder_known else current.meta.get("encoder"))
                self.dim = current.meta["dim"]
                self._adopt(current)
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def _adopt(self, current: IndexReader) -> None:
        """Start from the generation being extended: its docnos, offsets, tokens and codes are copied (checksums
        verified on the way), and its centroids kept so that the stored codes stay valid."""
        snap = TokenSnapshot(current)
        self._docnos.copy_current(current)
        self._offsets.append(np.asarray(snap.offsets[1:]))
        self._end = self._base_tokens = snap.tokens
        if snap.codec is not None:
            self._codec = snap.codec
            self.ncentroids = snap.ncentroids
        names = ["codes.i4"] if snap.ncentroids else []
        names += ["embs.f2"] if self.storage == "float16" else ["residuals.u1"]
        if snap.ncentroids or self.storage == "float16":
            self._writers = {n: self._build.array_writer(n, "uint8", ()) for n in names}
            for n in names:
                self._build.copy_current(n, self._writers[n])
        if snap.token_counts is not None:
            self._counts = np.array(snap.token_counts)
            self._ids_given = True
        elif snap.count:
            self._ids_given = False
        if snap.tokens and not snap.ncentroids:   # an index of tokens without a codec cannot be: say so
            raise CorruptIndexError(f"{self.path} holds tokens but no centroids")

    # ---- streaming -----------------------------------------------------------------------------------------------
    def add(self, docnos: list, matrices: list, token_ids: list | None = None) -> None:
        """Add documents: ``matrices[i]`` is document i's (n_i, dim) token vectors (n_i >= 1); ``token_ids[i]``
        (optional) the token id of each row. A problem names the docno."""
        if len(matrices) != len(docnos) or (token_ids is not None and len(token_ids) != len(docnos)):
            raise ValueError(f"got {len(docnos)} docnos, {len(matrices)} token matrices"
                             + ("" if token_ids is None else f" and {len(token_ids)} token id arrays"))
        if not docnos:
            return
        given = token_ids is not None
        if self._ids_given is None:
            self._ids_given = given
        elif self._ids_given != given:
            raise ValueError(f"document {docnos[0]!r} {'has' if given else 'lacks'} token ids, unlike the documents "
                             "before it; index every document the same way")
        mats = []
        for i, (d, m) in enumerate(zip(docnos, matrices)):
            m = np.asarray(m)
            if m.ndim != 2 or m.dtype.kind not in "fiu":
                raise ValueError(f"the token vectors of document {d!r} have shape {np.shape(m)} ({m.dtype}); "
                                 "expected a 2-d numeric (tokens, dim) matrix")
            if self.dim is None:
                self.dim = m.shape[1]
            if m.shape[1] != self.dim or self.dim == 0:
                raise ValueError(f"document {d!r} has {m.shape[1]}-dimensional token vectors; this index holds "
                                 f"{self.dim} dimensions")
            if len(m) == 0:
                raise ValueError(f"document {d!r} has no token vectors; every document needs at least one")
            if given and len(np.asarray(token_ids[i]).reshape(-1)) != len(m):
                raise ValueError(f"document {d!r} has {len(m)} token vectors but {np.size(token_ids[i])} token ids")
            mats.append(m)
        block = np.concatenate(mats)
        with np.errstate(over="ignore", invalid="ignore"):
            stored = block.astype(np.float16)
        bad = ~np.isfinite(stored).all(axis=1)
        if bad.any():
            lengths = np.fromiter((len(m) for m in mats), np.int64, len(mats))
            doc = int(np.searchsorted(np.cumsum(lengths), int(np.argmax(bad)), side="right"))
            raise ValueError(f"document {docnos[doc]!r} has a NaN, infinite or too large (for float16) value in its "
                             "token vectors")
        self._docnos.append(list(docnos))
        if self._staging is None:
            self._staging = self._build.array_writer(STAGING, "float16", (self.dim,))
            capacity = max(1, SAMPLE_BYTES // (4 * self.dim))
            self._reservoir = _Reservoir(capacity, self.dim, self.seed) if self._codec is None else None
        self._staging.append(stored)
        if self._reservoir is not None:
            self._reservoir.add(stored)
        lengths = np.fromiter((len(m) for m in mats), np.int64, len(mats))
        self._offsets.append(self._end + np.cumsum(lengths))
        self._end += int(lengths.sum())
        if given:
            ids = np.concatenate([np.asarray(t, dtype=np.int64).reshape(-1) for t in token_ids])
            if len(ids) and ids.min() < 0:
                raise ValueError("token ids must be >= 0")
            counts = np.bincount(ids, minlength=0 if self._counts is None else len(self._counts))
            if self._counts is None:
                self._counts = counts
            else:
                if len(counts) > len(self._counts):
                    self._counts = np.pad(self._counts, (0, len(counts) - len(self._counts)))
                self._counts[:len(counts)] += counts

    # ---- finishing ------------------------------------------------------------------------------------------------
    def _finish(self) -> dict:
        build, count = self._build, self._docnos.count
        offsets = np.concatenate([np.zeros(1, np.int64), *self._offsets]) if self._offsets else np.zeros(1, np.int64)
        new_tokens = self._end - self._base_tokens
        if self._codec is None and self._end:
            sample = self._reservoir.sample()
            k = min(self.ncentroids or suggest_ncentroids(self._end, len(sample)), len(sample))
            self._codec = ResidualCodec.train(sample, k, self.nbits or 1, seed=self.seed)
            self.ncentroids = k
            self._reservoir = None
        if self._end and self._writers is None:
            names = ["codes.i4"] + (["embs.f2"] if self.storage == "float16" else ["residuals.u1"])
            self._writers = {n: build.array_writer(n, "uint8", ()) for n in names}
        if new_tokens:
            self._staging.close()
            self._compress_staged(new_tokens)
        if self._staging is not None:
            (build.tmp / STAGING).unlink(missing_ok=True)
            build._writers.pop(STAGING, None)
        off = build.array_writer("token.off", "int64", ())
        off.append(offsets)
        if self._codec is not None:
            for name, arr in self._codec.arrays().items():
                build.array_writer(f"{name}.f4", "float32", arr.shape[1:]).append(arr)
            build_ivf(build, offsets, self.ncentroids)
        if self._counts is not None:
            build.array_writer("token_counts.i8", "int64", ()).append(self._counts)
        return {"count": count, "dim": self.dim, "tokens": int(self._end), "storage": self.storage,
                "nbits": self.nbits, "ncentroids": int(self.ncentroids or 0) if self._end else 0,
                "codec_nbits": self._codec.nbits if self._codec is not None else None,
                "encoder": self.encoder, "vocab_size": None if self._counts is None else len(self._counts)}

    def _compress_staged(self, new_tokens: int) -> None:
        """One pass over the staged float16 tokens: codes (and residuals) written in blocks of PASS_TOKENS. Blocks are
        read with plain reads, not a memory map, so the pages read do not stay counted in the process's memory."""
        from tqdm.auto import tqdm
        codes, vectors = self._writers["codes.i4"], self._writers.get("embs.f2") or self._writers["residuals.u1"]
        with open(self._build.tmp / STAGING, "rb") as staged, \
                tqdm(total=new_tokens, desc="compressing tokens", unit="token", disable=not self.progress) as bar:
            for start in range(0, new_tokens, PASS_TOKENS):
                n = min(PASS_TOKENS, new_tokens - start)
                raw = np.fromfile(staged, dtype=np.float16, count=n * self.dim).reshape(n, self.dim)
                block = raw.astype(np.float32)
                if self.storage == "float16":
                    codes.append_bytes(self._codec.assign(block).astype(np.int32).tobytes())
                    vectors.append_bytes(raw.tobytes())
                else:
                    c, packed = self._codec.compress(block)
                    codes.append_bytes(c.astype(np.int32).tobytes())
                    vectors.append_bytes(np.ascontiguousarray(packed).tobytes())
                bar.update(n)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self.dim is None:
                    raise ValueError("no documents were given, so the token vector dimension is unknown: pass the "
                                     "encoder's settings (or dim) to create an empty index")
                if not self._encoder_known and self._build.current is not None:
                    self.encoder = self._build.current.meta.get("encoder")
                self._docnos.finish()
                manifest = self._finish()
                self._build.publish(manifest)
        finally:
            self._build.__exit__(exc_type, exc, tb)
