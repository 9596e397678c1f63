"""Multinomial preprocessing layers: shapes, identity and missing entries, gradients, training, persistence."""
import math

import numpy as np
import pytest
import torch

from deem import DEEM, ops
from deem._validation import check_labels
from deem.alignment import majority_vote
from deem.datasets import dawid_skene
from deem.preprocessing import ACTIVATIONS, Preprocessor, initialize_preprocessor
from deem.solvers.samplers import hard_from
from deem.solvers import TrainConfig, learning_rate_at

X, Y = dawid_skene(n_samples=600, n_classifiers=8, n_classes=3, missing_rate=0.4, random_state=5)


def fast(**kw):
    base = dict(epochs=3, batch_size=64, sampler_steps=2, random_state=0, device="cpu", use_preprocessing=True)
    base.update(kw)
    return DEEM(**base)


def build(activation, widths=(8,), init="identity", data=None, **kw):
    data = data or check_labels(X)
    pre = Preprocessor(data.n_classifiers, list(widths), data.n_classes, activation, **kw)
    initialize_preprocessor(pre, data, init, torch.Generator().manual_seed(0))
    pre.eval()
    return pre, data


@pytest.mark.parametrize("activation", ["sparsemax", "entmax", "relu", "gelu", "silu"])
def test_identity_init_passes_hard_labels_through_exactly(activation):
    pre, data = build(activation)
    out = pre(data).values
    present = torch.as_tensor(X >= 0)
    one_hot = torch.nn.functional.one_hot(torch.as_tensor(X).clamp(min=0), 3).permute(0, 2, 1).float()
    expected = one_hot * present.unsqueeze(1)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_identity_softmax_keeps_the_label_and_missing_entries():
    pre, data = build("softmax")
    out = pre(data).values
    present = torch.as_tensor(X >= 0)
    assert torch.equal(out.sum(dim=1) > 0.5, present)  # missing stays missing
    torch.testing.assert_close(out.sum(dim=1)[present], torch.ones(int(present.sum())))
    assert torch.equal(out.argmax(dim=1)[present], torch.as_tensor(X)[present])


def test_widths_change_the_number_of_virtual_classifiers():
    model = fast(preprocessing_layer_widths=[12, 6, 4], preprocessing_activation="softmax").fit(X)
    assert model.preprocessor_.widths == [12, 6, 4]
    assert model.model_.W.shape == (3, 3, 4, 1)
    assert model.confusion_.shape == (4, 3, 3)
    assert model.n_classifiers_ == 8 and model.predict(X).shape == (600,)


def test_layers_count_sets_depth_at_input_width():
    model = fast(preprocessing_layers=2).fit(X)
    assert model.preprocessor_.widths == [8, 8]


@pytest.mark.parametrize("activation", ["softmax", "entmax", "gelu"])
def test_gradients_flow_from_the_energy_into_the_layers(activation):
    data = check_labels(X)
    pre, _ = build(activation, init="rand", data=data)
    pre.train()
    W = torch.randn(3, 3, 8, 1)
    free = ops.free_energy_soft(pre(data).values, W, torch.zeros(8, 3), torch.zeros(1, 3)).mean()
    grads = torch.autograd.grad(free, list(pre.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)
    assert grads[0].abs().sum() > 0


def test_joint_training_moves_the_layers():
    model = fast(preprocessing_activation="softmax", solver="gwg", epochs=5).fit(X)
    layer = model.preprocessor_.layers[0]
    scale = 5.0  # softmax identity scale
    assert not torch.allclose(layer.weight.detach(), scale * torch.eye(8))


def test_one_hot_is_straight_through():
    data = check_labels(X)
    identity, _ = build("softmax", data=data, one_hot=True)
    out = identity(data).values
    assert set(torch.unique(out).tolist()) <= {0.0, 1.0}
    assert torch.equal(out.sum(dim=1) > 0, torch.as_tensor(X >= 0))
    pre, _ = build("softmax", init="rand", data=data, one_hot=True)
    pre.train()
    out = pre(data).values
    # One class per virtual classifier (scaled by the share of its inputs present on the row).
    assert torch.equal((out.detach() > 0).sum(dim=1), torch.ones(600, 8, dtype=torch.int64))
    W = torch.randn(3, 3, 8, 1)
    free = ops.free_energy_soft(out, W, torch.zeros(8, 3), torch.zeros(1, 3)).mean()
    assert torch.autograd.grad(free, pre.layers[0].weight)[0].abs().sum() > 0


def test_jitter_only_in_training():
    data = check_labels(X)
    pre, _ = build("softmax", data=data, jitter=0.5)
    assert torch.equal(pre(data).values, pre(data).values)  # eval: deterministic
    pre.train()
    a = pre(data, torch.Generator().manual_seed(1)).values
    b = pre(data, torch.Generator().manual_seed(2)).values
    assert not torch.equal(a, b)


def test_mv_init_starts_every_virtual_classifier_at_the_weighted_vote():
    pre, data = build("sparsemax", init="mv")
    out = pre(data).values
    spread = (out - out.mean(dim=2, keepdim=True)).abs().max()
    assert spread < 1e-2


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("init", ["identity", "rand", "mv"])
def test_every_activation_and_init_fits_and_predicts(activation, init):
    model = fast(preprocessing_activation=activation, preprocessing_init=init, epochs=2).fit(X)
    proba = model.predict_proba(X)
    assert proba.shape == (600, 3) and np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_rectifier_with_softmax_output():
    pre, data = build("relu", use_softmax=True)
    out = pre(data).values
    present = torch.as_tensor(X >= 0)
    torch.testing.assert_close(out.sum(dim=1)[present], torch.ones(int(present.sum())))
    assert out.permute(0, 2, 1)[present].min() > 0  # softmax, not the clipped rectifier
    assert torch.equal(out.argmax(dim=1)[present], torch.as_tensor(X)[present])


def test_turning_preprocessing_on_is_not_worse_than_the_default():
    X2, y2 = dawid_skene(n_samples=1500, n_classifiers=12, n_classes=4, missing_rate=0.5, random_state=11)
    default = DEEM(random_state=0).fit(X2).score(X2, y2)
    with_layers = DEEM(random_state=0, use_preprocessing=True, epochs=20).fit(X2)
    assert with_layers.solver_ == "gwg" and with_layers.init_method_ == "ds"
    assert with_layers.posterior_ == "virtual_evidence"  # refit exactly on the layers' output
    assert with_layers.score(X2, y2) >= default - 0.005
    # Identity sparsemax layers on hard labels sit at a flat point: they stay the identity, and
    # the exact refit on their (one-hot) output is solver='exact''s fit.
    np.testing.assert_array_equal(with_layers.preprocessor_.layers[0].weight.detach().numpy(),
                                  2.0 * np.eye(12, dtype=np.float32))
    exact_model = DEEM(solver="exact", random_state=0).fit(X2)
    assert np.mean(with_layers.predict(X2) == exact_model.predict(X2)) > 0.999


def test_softmax_layers_move_and_the_refit_reads_their_output():
    X2, y2 = dawid_skene(n_samples=800, n_classifiers=10, n_classes=3, missing_rate=0.4, random_state=12)
    model = DEEM(random_state=0, use_preprocessing=True, preprocessing_activation="softmax", epochs=5).fit(X2)
    assert not np.allclose(model.preprocessor_.layers[0].weight.detach().numpy(), 5.0 * np.eye(10))
    assert model.score(X2, y2) >= np.mean(majority_vote(check_labels(X2)).numpy() == y2) - 0.01


def test_soft_labels_with_preprocessing():
    soft = np.random.default_rng(0).dirichlet(np.ones(3), size=(200, 6)).transpose(0, 2, 1)
    soft[:20, :, 0] = 0.0  # classifier 0 missing on 20 rows
    model = fast(preprocessing_activation="entmax").fit(soft)
    assert model.predict(soft).shape == (200,)


def test_save_load_keeps_the_layers(tmp_path):
    model = fast(preprocessing_layer_widths=[10, 5], preprocessing_activation="softmax").fit(X)
    model.save(tmp_path / "m.pt")
    loaded = DEEM().load(tmp_path / "m.pt")
    assert loaded.preprocessor_.widths == [10, 5]
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize("kw, match", [
    (dict(preprocessing_activation="tanh"), "preprocessing_activation"),
    (dict(preprocessing_init="zeros"), "preprocessing_init"),
    (dict(preprocessing_layer_widths=[4, 0]), "preprocessing_layer_widths"),
    (dict(preprocessing_layer_widths="4"), "preprocessing_layer_widths"),
    (dict(preprocessing_layers=0), "preprocessing_layers"),
    (dict(preprocessing_jitter=-1.0), "preprocessing_jitter"),
    (dict(solver="exact"), "solver='gwg'"),
])
def test_bad_preprocessing_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        fast(**kw).fit(X)


def test_learning_rate_schedules():
    def cfg(name):
        return TrainConfig(epochs=11, batch_size=1, learning_rate=0.1, momentum=0, cd_k=1, sampler_steps=1,
                           deterministic=True, scheduler=name)

    assert [learning_rate_at(cfg("constant"), e) for e in (0, 10)] == [0.1, 0.1]
    assert learning_rate_at(cfg("cosine"), 0) == pytest.approx(0.1)
    assert learning_rate_at(cfg("cosine"), 5) == pytest.approx(0.05)
    assert learning_rate_at(cfg("cosine"), 10) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate_at(cfg("exponential"), 10) == pytest.approx(0.001)
    assert learning_rate_at(cfg("exponential"), 5) == pytest.approx(0.1 * math.sqrt(0.01))
    with pytest.raises(ValueError, match="scheduler"):
        DEEM(scheduler="linear").fit(X)


def test_soft_chains_keep_missing_entries():
    soft = np.full((50, 3, 4), 1 / 3)
    soft[:, :, 2] = 0.0
    chains = hard_from(check_labels(soft), torch.Generator().manual_seed(0))
    assert (chains[:, 2] == -1).all() and (chains[:, [0, 1, 3]] >= 0).all()
