"""CUDA paths of every model family: what precision="auto" resolves to, agreement with fp32 on the GPU and with fp32
on the CPU, throughput by batch size, on 4,000 synthetic documents. Run on a machine with a GPU::

    python benchmarks/gpu_check.py MINILM_DIR SPLADE_DIR      # writes $OUT/gpu_check.json (or /tmp)

The package is imported without its ``__init__`` (so a GPU machine without pyterrier can run it): the model layer
needs only torch + transformers. Without a GPU it is a dry run on the CPU over 40 documents."""
import json
import os
import sys
import time
import types

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pkg = types.ModuleType("pyterrier_dense")
pkg.__path__ = [os.path.join(ROOT, "pyterrier_dense")]
pkg.__version__ = "0.1.0"
sys.modules["pyterrier_dense"] = pkg

from pyterrier_dense.models.bi_encoder_model import BiEncoderModel  # noqa: E402
from pyterrier_dense.models.colbert_model import ColBERTModel  # noqa: E402
from pyterrier_dense.models.cross_encoder_model import CrossEncoderModel  # noqa: E402
from pyterrier_dense.models.splade_model import SpladeModel  # noqa: E402

OUT = os.environ.get("OUT", "/tmp")
MINILM, SPLADE = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
WORDS = ("gene protein cell cancer patients study results effect model data method system energy light wave "
         "quantum temperature pressure magnetic field electron theory measurement of the and in is for with a "
         "to by as at from that this are was an or not which treatment risk increased associated").split()
DOCS = [" ".join(rng.choice(WORDS, int(rng.integers(20, 220)))) for _ in range(4000)]
QUERIES = [" ".join(rng.choice(WORDS, int(rng.integers(4, 16)))) for _ in range(512)]
DEV = "cuda" if torch.cuda.is_available() else "cpu"   # cpu: a dry run of this script
if DEV == "cpu":
    DOCS, QUERIES = DOCS[:40], QUERIES[:10]
res = {"gpu": torch.cuda.get_device_name(0) if DEV == "cuda" else None, "torch": torch.__version__}


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def timed(fn):
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t


def cos_gap(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(1 - (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def family(name, make, run, compare):
    r = {}
    try:
        ref = make(device=DEV, precision="fp32")
        auto = make(device=DEV, precision="auto")
        cpu = make(device="cpu", precision="fp32")
        r["auto_precision"] = auto.precision
        run(auto, DOCS), run(ref, DOCS)   # warm-up over every shape the timed runs see
        out32, s32 = timed(lambda: run(ref, DOCS))
        outa, sa = timed(lambda: run(auto, DOCS))
        r["fp32_docs_per_s"], r["auto_docs_per_s"] = round(len(DOCS) / s32), round(len(DOCS) / sa)
        r["auto_vs_fp32"] = compare(outa, out32)
        r["cuda_fp32_vs_cpu_fp32"] = compare(run(ref, DOCS[:64]), run(cpu, DOCS[:64]))
        for bs in ((32, 128, 512) if DEV == "cuda" else (8,)):
            m = make(device=DEV, precision="auto", batch_size=bs)
            run(m, DOCS)
            _, s = timed(lambda: run(m, DOCS))
            r[f"auto_docs_per_s_batch{bs}"] = round(len(DOCS) / s)
        ref = auto = cpu = None   # free the GPU memory before the next family
        torch.cuda.empty_cache() if DEV == "cuda" else None
    except Exception:  # report and go on to the next family
        import traceback
        r["error"] = traceback.format_exc()[-3000:]
    res[name] = r
    print(name, json.dumps(r), flush=True)


family("bi_encoder", lambda **kw: BiEncoderModel(MINILM, verbose=False, **kw),
       lambda m, t: m.encode(t, progress=False), lambda a, b: {"max_1_minus_cos": cos_gap(a, b)})


def colbert_compare(a, b):
    return {"max_1_minus_cos": max(cos_gap(x.embs, y.embs) for x, y in zip(a, b)),
            "same_token_ids": all(np.array_equal(x.ids, y.ids) for x, y in zip(a, b))}


family("colbert_zero_shot", lambda **kw: ColBERTModel(MINILM, verbose=False, **kw),
       lambda m, t: m.encode(t, role="doc", progress=False), colbert_compare)


def ce_pairs(texts):
    return [(QUERIES[i % len(QUERIES)], t) for i, t in enumerate(texts)]


def ce_compare(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return {"max_abs_diff": float(np.max(np.abs(a - b))), "score_std": float(b.std()),
            "spearman": float(np.corrcoef(ra, rb)[0, 1])}


def make_ce(**kw):
    path = "/tmp/ce-minilm"
    if not os.path.exists(path):
        from transformers import AutoTokenizer, BertForSequenceClassification
        torch.manual_seed(0)
        BertForSequenceClassification.from_pretrained(MINILM, num_labels=1).save_pretrained(path)
        AutoTokenizer.from_pretrained(MINILM).save_pretrained(path)
    return CrossEncoderModel(path, verbose=False, **kw)


family("cross_encoder", make_ce, lambda m, t: m.score(ce_pairs(t), progress=False), ce_compare)


def splade_compare(a, b):
    gaps, overlaps = [], []
    for x, y in zip(a, b):
        keys = set(x) | set(y)
        va = np.array([x.get(k, 0.0) for k in keys])
        vb = np.array([y.get(k, 0.0) for k in keys])
        gaps.append(np.linalg.norm(va - vb) / np.linalg.norm(vb))
        top = lambda d: set(sorted(d, key=d.get, reverse=True)[:20])
        overlaps.append(len(top(x) & top(y)) / 20)
    return {"max_relative_l2": float(np.max(gaps)), "mean_top20_overlap": float(np.mean(overlaps)),
            "mean_terms": float(np.mean([len(x) for x in a]))}


family("splade_tiny", lambda **kw: SpladeModel(SPLADE, verbose=False, **kw),
       lambda m, t: m.encode(t, role="doc", progress=False), splade_compare)

with open(os.path.join(OUT, "gpu_check.json"), "w") as f:
    json.dump(res, f, indent=1)
print(json.dumps(res, indent=1))
