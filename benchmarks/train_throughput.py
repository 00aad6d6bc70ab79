"""Training throughput: our trainer against sentence-transformers' trainer on the same examples.

A measurement script, not a test: it prints one JSON object (and writes it with ``--json``). From the repository
root (sentence-transformers' trainer needs ``pip install datasets accelerate``)::

    python benchmarks/train_throughput.py --collection ../shared/data/scifact --steps 4 --json out.json
    python benchmarks/train_throughput.py --collection ../shared/data/scifact --steps 0 --evaluate test

Both train all-MiniLM-L6-v2 for ``--steps`` steps of ``--batch-size`` (query, positive, hard negative) examples
taken from the collection's triples file (its first negative; ``--steps 0``: all of them, one epoch), with InfoNCE
over in-batch documents and the hard negatives (sentence-transformers' MultipleNegativesRankingLoss, scale 20 =
temperature 0.05), AdamW at lr 2e-5, the same max length and threads, one process, each with its own defaults
otherwise (ours turns attention dropout off while training). ``precision`` is ours' (``auto``: bf16 autocast on
CPUs with native bf16); sentence-transformers runs with ``--st-bf16`` set the same way. Figures: examples a second
each and the ratio ``train_examples_per_s_vs_st``, with the CPU kind; with ``--evaluate SPLIT``, nDCG@10 and R@100
of both trained models by exact dense retrieval on that split (fp32 encoding). Each trainer runs once untimed
first (the first run in a process is slower, whichever it is).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measures import cpu_kind, evaluate, publish  # noqa: E402


class Examples(NamedTuple):
    coll: object
    topics: object      # the training topics, in the file's order
    qrels: object       # each topic's first judged positive
    negatives: object   # each topic's first negative
    rows: list          # each topic's (query, positive text, negative text), aligned with ``topics``

    def first(self, steps: int, batch_size: int) -> "Examples":
        """The first ``steps`` batches (0: all of them)."""
        n = steps * batch_size if steps else len(self.rows)
        return self._replace(topics=self.topics.iloc[:n], rows=self.rows[:n])


def examples(args) -> Examples:
    """The (query, positive, first negative) triples of the file, read once for every run."""
    import pyterrier_dense as ptd
    from pyterrier_dense.training import read_triples
    coll = ptd.Collection(args.collection)
    topics, qrels, negatives = read_triples(os.path.join(args.collection, args.triples))
    qrels = qrels.drop_duplicates("qid")
    negatives = negatives.sort_values(["qid", "rank"]).drop_duplicates("qid")
    topics = topics[topics.qid.isin(negatives.qid)]
    pos = qrels.set_index("qid")["docno"][topics.qid].tolist()
    neg = negatives.set_index("qid")["docno"][topics.qid].tolist()
    texts = dict(zip(pos + neg, coll.texts(pos + neg)))
    rows = [(q, texts[p], texts[d]) for q, p, d in zip(topics["query"], pos, neg)]
    return Examples(coll, topics, qrels, negatives, rows)


def effectiveness(args, coll, enc, name: str) -> dict:
    """nDCG@10 / R@100 of exact dense retrieval with the trained model on ``--evaluate``'s split."""
    from train import dense_run
    run = dense_run(enc, coll, coll.topics(args.evaluate), os.path.join(args.workdir, f"{name}.dense"))
    return evaluate(run, coll.qrels(args.evaluate))


def ours(args, model_path, ex: Examples, evaluated: bool = False) -> dict:
    import pyterrier_dense as ptd
    from pyterrier_dense.training import BiEncoderObjective, Trainer, build_training_set
    from pyterrier_dense.training.trainer import training_precision
    enc = ptd.BiEncoder(model_path, precision="fp32", verbose=False)
    data = build_training_set(ex.topics, ex.qrels[ex.qrels.qid.isin(ex.topics.qid)], ex.coll,
                              negatives=ex.negatives)
    precision = training_precision(enc.model.device, args.precision)
    trainer = Trainer(enc.model, BiEncoderObjective(enc.model, texts=data.texts, precision=precision),
                      batch_size=args.batch_size, n_negatives=1, lr=2e-5, verbose=False)
    t = time.perf_counter()
    history = trainer.train(data)
    seconds = time.perf_counter() - t
    out = {"examples": len(data), "seconds": round(seconds, 1), "examples_per_s": round(len(data) / seconds, 3),
           "precision": precision, "loss": round(history[0]["train_loss"], 4)}
    return {**out, **effectiveness(args, ex.coll, enc, "ours")} if evaluated else out


def sentence_transformers_trainer(args, model_path, ex: Examples, evaluated: bool = False) -> dict:
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)
    rows = ex.rows
    model = SentenceTransformer(model_path, device="cpu")
    data = Dataset.from_dict({"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows],
                              "negative": [r[2] for r in rows]})
    targs = SentenceTransformerTrainingArguments(
        output_dir=os.path.join(args.workdir, "st"), per_device_train_batch_size=args.batch_size, num_train_epochs=1,
        learning_rate=2e-5, warmup_steps=0.1, bf16=args.st_bf16, use_cpu=True, report_to=[], save_strategy="no",
        logging_strategy="no", dataloader_drop_last=False, seed=0, disable_tqdm=True)
    trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=data,
                                         loss=losses.MultipleNegativesRankingLoss(model, scale=20.0))
    t = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - t
    result = {"examples": len(rows), "seconds": round(seconds, 1), "examples_per_s": round(len(rows) / seconds, 3),
              "bf16": args.st_bf16, "loss": round(float(out.training_loss), 4)}
    if not evaluated:
        return result
    import pyterrier_dense as ptd
    model.save(os.path.join(args.workdir, "st-model"))
    enc = ptd.BiEncoder(os.path.join(args.workdir, "st-model"), precision="fp32", verbose=False)
    return {**result, **effectiveness(args, ex.coll, enc, "st")}


def run(args) -> dict:
    import torch
    from pyterrier_dense.models.default_model import DEFAULT_MODEL, resolve_model
    from pyterrier_dense.models.precision import cpu_has_native_bf16
    args.workdir = args.workdir or "/tmp/train-throughput"
    if args.st_bf16 is None:
        args.st_bf16 = cpu_has_native_bf16()
    model_path = args.model or resolve_model(DEFAULT_MODEL)
    ex = examples(args)
    warm, timed = ex.first(min(args.steps or 4, 4), args.batch_size), ex.first(args.steps, args.batch_size)
    out = {"cpu": cpu_kind(), "threads": torch.get_num_threads(), "batch_size": args.batch_size,
           "examples": len(timed.rows)}
    # the first training run in a process pays for oneDNN's kernel set-up (a fifth of a short run under bf16): each
    # trainer runs once untimed (at most 4 steps), then once timed; sentence-transformers' runs come first, so that
    # neither runs in a process whose allocator settings ours has changed (it restores them, but the heap stays)
    evaluated = args.evaluate is not None
    sentence_transformers_trainer(args, model_path, warm)
    out["sentence_transformers"] = sentence_transformers_trainer(args, model_path, timed, evaluated)
    ours(args, model_path, warm)
    out["ours"] = ours(args, model_path, timed, evaluated)
    out["train_examples_per_s_vs_st"] = round(out["ours"]["examples_per_s"] /
                                              out["sentence_transformers"]["examples_per_s"], 3)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--collection", required=True)
    p.add_argument("--triples", default="train_triples.train.bm25negs.jsonl")
    p.add_argument("--model")
    p.add_argument("--steps", type=int, default=4, help="batches timed (0: the whole file, one epoch)")
    p.add_argument("--evaluate", metavar="SPLIT", help="also nDCG@10 / R@100 of both trained models on this split")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="auto")
    p.add_argument("--st-bf16", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    p.add_argument("--workdir")
    p.add_argument("--json")
    args = p.parse_args(argv)
    publish(run(args), args.json)


if __name__ == "__main__":
    main()
