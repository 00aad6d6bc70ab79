"""The shared training loop: GradCache gives the plain gradient, a killed run resumes to the same weights, validation
keeps the best epoch and patience stops early, the cross-encoder objective's chunks give the plain gradient."""
from __future__ import annotations

import resource

import numpy as np
import pytest
import torch

import pyterrier_dense as ptd
from pyterrier_dense.training import (BiEncoderObjective, CrossEncoderObjective, Trainer, build_training_set,
                                      make_batches)
from pyterrier_dense.training.allocator import _glibc, freed_memory_kept
from pyterrier_dense.training.teacher import teacher_scores
from pyterrier_dense.training.trainer import attention_dropouts
from test_training import FirstDocs, ScoreByOverlap, toy_data


def _data(teacher=False):
    topics, qrels, docs = toy_data()
    scores = teacher_scores(ScoreByOverlap(docs), topics, cache_dir=False) if teacher else None
    return build_training_set(topics, qrels, docs, negatives=FirstDocs(sorted(docs)), teacher=scores)


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for t in model.towers() for p in t.parameters() if p.grad is not None]


@pytest.mark.parametrize("distill", [None, "kl", "margin_mse"])
def test_gradcache_gives_the_plain_gradient(tiny_st_model, distill):
    enc = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)
    data = _data(teacher=distill is not None)
    batch = make_batches(data, 6, 3, np.random.default_rng(0))[0]
    grads = []
    for chunk in (None, 4):
        enc.model.doc_model.zero_grad()
        objective = BiEncoderObjective(enc.model, texts=data.texts, distill=distill, chunk_size=chunk,
                                       teacher_temperature=0.5)
        loss = objective.backward(batch)
        grads.append((loss, _grads(enc.model)))
    (plain_loss, plain), (cached_loss, cached) = grads
    assert cached_loss == pytest.approx(plain_loss, rel=1e-5) and len(plain) == len(cached) > 0
    for a, b in zip(plain, cached):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_gradcache_replays_dropout_so_train_mode_matches_too(tiny_st_model):
    enc = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)
    data = _data()
    batch = make_batches(data, 6, 2, np.random.default_rng(0))[0]
    objective = BiEncoderObjective(enc.model, texts=data.texts, chunk_size=3)
    enc.model.doc_model.train()
    try:
        torch.manual_seed(0)
        first = objective.backward(batch)
        enc.model.doc_model.zero_grad()
        torch.manual_seed(0)
        assert objective.backward(batch) == first   # the replay neither changed the loss nor the random stream
    finally:
        enc.model.doc_model.eval()


def test_cross_encoder_chunks_give_the_plain_gradient(tiny_st_model):
    ce = ptd.CrossEncoder(tiny_st_model, new_head=True, precision="fp32", verbose=False)
    data = _data(teacher=True)
    batch = make_batches(data, 5, 3, np.random.default_rng(0))[0]
    grads = []
    for chunk in (None, 2):
        ce.model.model.zero_grad()
        loss = CrossEncoderObjective(ce.model, texts=data.texts, distill="kl", chunk_size=chunk).backward(batch)
        grads.append((loss, _grads(ce.model)))
    assert grads[1][0] == pytest.approx(grads[0][0], rel=1e-5)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


class Killed(Exception):
    pass


def _trainer(model, data, tmp_path, **kw):
    return Trainer(model, BiEncoderObjective(model, texts=data.texts), epochs=2, batch_size=3, n_negatives=2,
                   lr=1e-3, seed=5, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=1, verbose=False, **kw)


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(tiny_st_model, tmp_path):
    data = _data()
    whole = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False).model
    _trainer(whole, data, tmp_path / "a").train(data)

    killed = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False).model
    trainer = _trainer(killed, data, tmp_path / "b")
    calls = {"n": 0}
    real = trainer.objective.backward

    def dies_at_sixth(batch, scale):
        calls["n"] += 1
        if calls["n"] == 6:   # in the second epoch (4 batches an epoch)
            raise Killed
        return real(batch, scale)
    trainer.objective.backward = dies_at_sixth
    with pytest.raises(Killed):
        trainer.train(data)
    assert (tmp_path / "b" / "ckpt" / "trainer_state.pt").exists()

    fresh = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False).model   # a new process would reload
    again = _trainer(fresh, data, tmp_path / "b")
    history = again.train(data)
    assert again.resumed_from == 5 and [h["epoch"] for h in history] == [1, 2]
    for a, b in zip(whole.doc_model.state_dict().values(), fresh.doc_model.state_dict().values()):
        assert torch.equal(a, b)
    assert not (tmp_path / "b" / "ckpt").exists()   # removed once training ended


def test_a_checkpoint_of_other_settings_is_refused(tiny_st_model, tmp_path):
    data = _data()
    model = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False).model
    trainer = _trainer(model, data, tmp_path)
    trainer.objective.backward = lambda batch, scale: (_ for _ in ()).throw(Killed) if trainer.history else \
        BiEncoderObjective.backward(trainer.objective, batch, scale)
    with pytest.raises(Killed):
        trainer.train(data)
    other = Trainer(model, BiEncoderObjective(model, texts=data.texts), epochs=2, batch_size=3, n_negatives=2,
                    lr=5e-4, seed=5, checkpoint_dir=tmp_path / "ckpt", verbose=False)
    with pytest.raises(ValueError, match="checkpoint of a training run with other settings"):
        other.train(data)


def test_validation_keeps_the_best_epoch_and_patience_stops(tiny_st_model):
    data = _data()
    model = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False).model
    figures = iter([0.5, 0.7, 0.6, 0.4, 0.9])
    states = []

    def validate():
        states.append({k: v.clone() for k, v in model.doc_model.state_dict().items()})
        return next(figures)
    trainer = Trainer(model, BiEncoderObjective(model, texts=data.texts), epochs=5, batch_size=4, lr=1e-3,
                      patience=2, verbose=False)
    history = trainer.train(data, validate=validate)
    assert [h["valid"] for h in history] == [0.5, 0.7, 0.6, 0.4]   # stopped after two epochs without improvement
    for k, v in model.doc_model.state_dict().items():
        assert torch.equal(v, states[1][k])   # epoch 2's weights restored


def test_self_negatives_come_from_the_models_own_index_and_are_refreshed(tiny_st_model):
    from test_training import toy_data
    from pyterrier_dense.training import SelfNegatives
    topics, qrels, docs = toy_data()
    corpus = [{"docno": d, "text": t} for d, t in docs.items()]
    enc = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)
    miner = SelfNegatives(corpus, every=2, depth=7)
    run = miner.mine(enc.model, topics)
    q = enc.model.encode(topics["query"].tolist(), role="query")
    d = enc.model.encode([c["text"] for c in corpus])
    for i, qid in enumerate(topics.qid):
        expected = [corpus[j]["docno"] for j in np.argsort(-(d @ q[i]), kind="stable")[:7]]
        assert run[run.qid == qid].sort_values("rank").docno.tolist() == expected
    enc.fit(topics, qrels, topics.iloc[:3], qrels, texts=docs, negatives=SelfNegatives(corpus, every=2, depth=7),
            n_negatives=2, epochs=2, batch_size=3, lr=1e-3)
    # 4 batches an epoch, 8 steps: mined before training and after steps 2, 4, 6 and 8
    assert enc.last_fit["self_negative_refreshes"] == 5 and all("valid" in e for e in enc.last_fit["epochs"])
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        SelfNegatives(corpus, every=0)


def test_gradient_checkpointing_trains_to_the_same_weights(tiny_st_model):
    data = _data()
    weights = []
    for kw in ({}, {"gradient_checkpointing": True}):
        model = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False).model
        Trainer(model, BiEncoderObjective(model, texts=data.texts), batch_size=4, n_negatives=2, lr=1e-3, seed=1,
                verbose=False, **kw).train(data)
        tower = model.doc_model
        flag = "is_activation_checkpointing" if hasattr(type(tower), "is_activation_checkpointing") else \
            "is_gradient_checkpointing"
        assert not getattr(tower, flag)   # switched off again after training
        weights.append(model.doc_model.state_dict())
    for k, v in weights[0].items():
        torch.testing.assert_close(weights[1][k], v, rtol=1e-4, atol=1e-6)


def test_accumulated_half_batches_give_the_gradient_of_whole_batches(tiny_st_model, monkeypatch):
    data = _data(teacher=True)   # ten queries: one step an epoch either way
    clip = torch.nn.utils.clip_grad_norm_
    stepped = []

    def spy(params, max_norm):   # the gradient an optimiser step is about to use
        params = list(params)
        stepped[-1].append([p.grad.clone() for p in params if p.grad is not None])
        return clip(params, max_norm)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    for batch_size, accumulation in ((10, 1), (5, 2)):
        stepped.append([])
        ce = ptd.CrossEncoder(tiny_st_model, new_head=True, precision="fp32", verbose=False).model
        torch.manual_seed(0)
        torch.nn.init.normal_(ce.model.classifier.weight, std=0.5)   # the same head for both
        for m in ce.model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0   # (dropout masks depend on how the batch is cut)
        Trainer(ce, CrossEncoderObjective(ce, texts=data.texts, distill="kl"), batch_size=batch_size,
                accumulation=accumulation, n_negatives=3, lr=1e-3, verbose=False).train(data)
    whole, halves = stepped
    assert len(whole) == len(halves) == 1 and len(whole[0]) == len(halves[0]) > 0
    for a, b in zip(whole[0], halves[0]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


def _attention_is_random(model) -> bool:
    """Whether two train-mode forwards of the same text differ with every other dropout off."""
    tower = model.doc_model
    hidden = [m for m in tower.modules() if isinstance(m, torch.nn.Dropout) and
              not any(m is d for d in attention_dropouts(tower))]
    kept = [m.p for m in hidden]
    for m in hidden:
        m.p = 0.0
    try:
        with torch.no_grad():
            a, b = (model.embed(["a query about dropout in attention"], "query") for _ in range(2))
    finally:
        for m, p in zip(hidden, kept):
            m.p = p
    return not torch.equal(a, b)


@pytest.mark.parametrize("setting, during", [({}, 0.0), ({"attention_dropout": None}, 0.1),
                                             ({"attention_dropout": 0.3}, 0.3)])
def test_attention_dropout_is_set_while_training_and_restored_after(tiny_st_model, setting, during):
    data = _data()
    model = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False).model
    layers = model.doc_model.config.num_hidden_layers
    found = attention_dropouts(model.doc_model)
    assert len(found) == layers and all(d.p == pytest.approx(0.1) for d in found)   # the model's own
    trainer = Trainer(model, BiEncoderObjective(model, texts=data.texts), batch_size=4, n_negatives=2, seed=1,
                      verbose=False, **setting)
    seen = []
    real = trainer.objective.backward

    def spy(batch, scale):
        seen.append(([d.p for d in found], _attention_is_random(model)))
        return real(batch, scale)
    trainer.objective.backward = spy
    trainer.train(data)
    assert seen and all(ps == [pytest.approx(during)] * layers and random == (during > 0) for ps, random in seen)
    assert [d.p for d in found] == [pytest.approx(0.1)] * layers   # restored


def test_attention_dropout_is_checked(tiny_st_model):
    model = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False).model
    for bad in (1.0, -0.1, True, "0"):
        with pytest.raises(ValueError, match="attention_dropout must be None or a number in"):
            Trainer(model, None, attention_dropout=bad)


def _page_faults(nbytes: int = 100 << 20) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(nbytes // 4)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_freed_memory_is_kept_while_training_and_released_after():
    if _glibc() is None:
        pytest.skip("the setting is glibc's (Linux); elsewhere freed_memory_kept does nothing")
    pages = (100 << 20) // resource.getpagesize()
    with freed_memory_kept():
        with freed_memory_kept():
            pass   # an inner context closing leaves the outer one's settings
        inside = [_page_faults() for _ in range(5)]
        kept = _resident_bytes()
    assert inside[-1] < pages // 100   # the block freed a moment ago is reused, not faulted in again
    assert kept - _resident_bytes() > (90 << 20)   # on leaving, the kept memory goes back to the kernel
