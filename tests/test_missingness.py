"""Missing labels as evidence: the informative model, the presence test behind missing='auto', the reliability
attributes in the voter's own terms, and the labeling-function generator."""
import numpy as np
import pytest
import torch

from deem import DEEM, ops
from deem.datasets import dawid_skene, labeling_functions
from deem.missingness import presence_log_bayes_factor


def majority_vote(L, k):
    counts = np.stack([(L == c).sum(1) for c in range(k)], 1)
    return counts.argmax(1)


def accuracy(pred, y, L):
    has = (L >= 0).any(1)
    return float((pred[has] == y[has]).mean())


@pytest.mark.parametrize("solver", ["bayes", "exact"])
def test_one_class_voters_majority_vote_beats_ignorable_and_the_default_recovers(solver):
    """Every voter votes for one class only: ignoring abstentions leaves nothing to learn from."""
    L, y = labeling_functions(n_samples=3000, n_voters=16, one_class_share=1.0, random_state=3)
    mv = accuracy(majority_vote(L, 2), y, L)
    ignorable = accuracy(DEEM(solver=solver, missing="ignorable").fit(L).predict(L), y, L)
    model = DEEM(solver=solver).fit(L)
    default = accuracy(model.predict(L), y, L)
    assert mv > ignorable + 0.10
    assert model.missing_ == "informative" and model.missing_log_bayes_factor_ > 0
    assert default > mv + 0.01


def minority_f1(pred, y, L):
    from sklearn.metrics import f1_score

    has = (L >= 0).any(1)
    return float(f1_score(y[has], pred[has], labels=[1], average=None, zero_division=0)[0])


def test_imbalanced_ensemble_old_default_predicts_one_class_new_one_does_not():
    L, y = labeling_functions(n_samples=3000, n_voters=10, class_balance=[0.9, 0.1], one_class_share=1.0,
                              coverage=(0.05, 0.3), random_state=1)
    old = DEEM(missing="ignorable").fit(L).predict(L)
    model = DEEM().fit(L)
    new = model.predict(L)
    mv = majority_vote(L, 2)
    assert len(np.unique(old)) == 1  # the class prior swallowed the minority class
    assert model.missing_ == "informative" and model.anchor_ == "majority"
    assert len(np.unique(new)) == 2
    # the minority class is found more often than majority vote finds it, at no cost in accuracy
    assert minority_f1(new, y, L) > minority_f1(mv, y, L) + 0.2
    assert accuracy(new, y, L) > accuracy(mv, y, L) + 0.02


def test_where_the_voters_are_independent_iterating_to_convergence_gains_more():
    """The generator's voters are conditionally independent (no copies, no activity spread): the model holds,
    and EM run to convergence (anchor='none') recovers the minority class the anchored reading still misses."""
    L, y = labeling_functions(n_samples=3000, n_voters=10, class_balance=[0.9, 0.1], one_class_share=1.0,
                              coverage=(0.05, 0.3), random_state=1)
    anchored = DEEM(anchor="majority").fit(L).predict(L)
    converged = DEEM(anchor="none").fit(L)
    assert converged.anchor_ == "none"
    assert minority_f1(converged.predict(L), y, L) > minority_f1(anchored, y, L) + 0.2


def test_dependent_labeling_functions_anchored_fit_holds_where_the_converged_one_drifts():
    """Copies of voters and items of unequal activity break conditional independence: the likelihood's maximum
    moves the hidden class off the class, the majority-vote-anchored default does not."""
    L, y = labeling_functions(n_samples=2000, n_voters=20, n_classes=3, class_balance=[0.7, 0.25, 0.05],
                              one_class_share=0.5, coverage=(0.1, 0.6), precision=(0.55, 0.75),
                              n_correlated=6, activity_spread=1.0, random_state=29)
    mv = accuracy(majority_vote(L, 3), y, L)
    model = DEEM().fit(L)
    default = accuracy(model.predict(L), y, L)
    converged = accuracy(DEEM(anchor="none").fit(L).predict(L), y, L)
    assert default > mv - 0.01
    assert default > converged + 0.05
    # anchor='auto' fitted the converged model too, and its checks saw the copies and the activity spread
    checks = model.anchor_checks_
    assert model.anchor_ == "majority" and not checks["holds"]
    assert checks["pair_z"] > checks["pair_limit"] and checks["dispersion_z"] > checks["dispersion_limit"]


@pytest.mark.parametrize("kwargs,what", [(dict(activity_spread=1.0), "dispersion"), (dict(n_correlated=4), "pair")])
def test_the_converged_fits_checks_see_activity_and_copies_each_on_its_own(kwargs, what):
    L, _ = labeling_functions(n_samples=3000, n_voters=15, n_classes=2, one_class_share=0.5, coverage=(0.1, 0.5),
                              random_state=3, **kwargs)
    checks = DEEM().fit(L).anchor_checks_
    assert not checks["holds"] and checks[f"{what}_z"] > checks[f"{what}_limit"]


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_auto_keeps_the_converged_fit_where_the_voters_are_independent_and_rows_many(layout, tmp_path):
    """Independent voters, 5,000 rows: EM's converged fit passes its checks (deem/anchor_checks.py) and is kept;
    it is 7 points above the anchored reading here and within half a point of the Bayes-optimal rule."""
    L, y = labeling_functions(n_samples=5000, n_voters=15, n_classes=2, class_balance=[0.8, 0.2],
                              one_class_share=0.7, coverage=(0.05, 0.4), random_state=0)
    model = DEEM(layout=layout).fit(L)
    assert model.missing_ == "informative" and model.anchor_ == "none" and model.anchor_checks_["holds"]
    converged = DEEM(anchor="none", layout=layout).fit(L)
    np.testing.assert_array_equal(model.predict(L), converged.predict(L))
    anchored = DEEM(anchor="majority", layout=layout).fit(L)
    assert anchored.anchor_checks_ is None  # an explicit anchor runs no checks
    assert accuracy(model.predict(L), y, L) > accuracy(anchored.predict(L), y, L) + 0.05
    model.save(tmp_path / "m.pt")
    loaded = DEEM().load(tmp_path / "m.pt")
    assert loaded.anchor_ == "none" and loaded.anchor_checks_ == model.anchor_checks_


@pytest.mark.parametrize("seed", range(3))
def test_auto_is_ignorable_on_randomly_assigned_crowds(seed):
    X, _ = dawid_skene(n_samples=1500, n_classifiers=20, n_classes=3, missing_rate=0.7, random_state=seed)
    model = DEEM().fit(X)
    assert model.missing_ == "ignorable"
    assert model.missing_log_bayes_factor_ < 0
    ignorable = DEEM(missing="ignorable").fit(X)
    np.testing.assert_array_equal(model.predict(X), ignorable.predict(X))


@pytest.mark.parametrize("kwargs", [dict(), dict(n_classes=4, n_voters=30, one_class_share=0.5),
                                    dict(one_class_share=0.0, n_correlated=5)])
def test_auto_is_informative_on_labeling_functions(kwargs):
    L, _ = labeling_functions(random_state=2, **kwargs)
    assert presence_log_bayes_factor(torch.as_tensor(L), int(L.max()) + 1) > 0
    assert DEEM(solver="exact").fit(L).missing_ == "informative"


def test_bad_anchor_is_a_value_error():
    L, _ = labeling_functions(n_samples=200, random_state=0)
    with pytest.raises(ValueError, match="anchor must be one of"):
        DEEM(anchor="converged").fit(L)


def test_presence_test_ignores_a_voter_that_never_answers():
    X, _ = dawid_skene(n_samples=500, n_classifiers=8, missing_rate=0.6, random_state=0)
    base = presence_log_bayes_factor(torch.as_tensor(X), 3)
    with_constant = np.concatenate([X, -np.ones((500, 1), dtype=X.dtype)], 1)
    assert presence_log_bayes_factor(torch.as_tensor(with_constant), 3) == pytest.approx(base)


def test_complete_matrix_has_nothing_to_decide():
    X, _ = dawid_skene(n_samples=300, n_classifiers=6, missing_rate=0.0, random_state=0)
    model = DEEM().fit(X)
    assert model.missing_ == "ignorable" and model.missing_log_bayes_factor_ is None


@pytest.mark.parametrize("solver", ["bayes", "exact"])
def test_informative_fit_through_the_op_equals_the_pytorch_twin(solver):
    L, _ = labeling_functions(n_samples=800, n_voters=8, n_classes=3, random_state=4)
    fast = DEEM(solver=solver, missing="informative").fit(L)
    with ops.use_reference():
        slow = DEEM(solver=solver, missing="informative").fit(L)
        slow_proba = slow.predict_proba(L)
    np.testing.assert_allclose(fast.abstain_rate_, slow.abstain_rate_, rtol=0, atol=1e-9)  # float64 fit
    np.testing.assert_allclose(fast.predict_proba(L), slow_proba, rtol=0, atol=1e-6)  # the RBM holds float32


def test_rows_where_every_voter_abstained_are_fitted_and_predicted():
    L, y = labeling_functions(n_samples=2000, n_voters=6, one_class_share=1.0, coverage=(0.1, 0.3), random_state=5)
    empty = ~(L >= 0).any(1)
    assert empty.sum() > 50
    model = DEEM(missing="informative").fit(L)
    assert model.n_dropped_rows_ == 0
    proba = model.predict_proba(L[empty])
    # a row where nobody fired is evidence: the class the voters fire on least, not the prior
    assert np.allclose(proba, proba[0])
    ignorable = DEEM(missing="ignorable").fit(L)
    assert ignorable.n_dropped_rows_ == int(empty.sum())


def test_reliability_in_the_voters_own_terms():
    L, y = labeling_functions(n_samples=6000, n_voters=12, n_classes=3, one_class_share=0.5, random_state=6)
    # independent voters: the model holds, and the fit run to convergence recovers the generator's rates
    # (the majority-vote-anchored default reads them through the majority vote's errors)
    model = DEEM(missing="informative", anchor="none").fit(L)
    d, k = L.shape[1], 3
    assert model.abstain_rate_.shape == (d, k) and model.coverage_.shape == (d,)
    np.testing.assert_allclose(model.coverage_, (L >= 0).mean(0))
    # against the truth: per-class abstention rates and accuracy when voting
    true_rate = np.stack([(L[y == c] < 0).mean(0) for c in range(k)], 1)
    assert np.abs(model.abstain_rate_ - true_rate).max() < 0.05
    voted = L >= 0
    true_acc = np.array([(L[voted[:, i], i] == y[voted[:, i]]).mean() for i in range(d)])
    assert np.abs(model.accuracy_when_voting_ - true_acc).max() < 0.08
    # coverage agrees with the class-averaged abstention rate under the fitted prior
    prior = np.bincount(model.predict(L), minlength=k) / len(L)
    np.testing.assert_allclose(1 - model.abstain_rate_ @ prior, model.coverage_, atol=0.02)


def test_ignorable_abstain_rate_is_the_share_missing():
    X, _ = dawid_skene(n_samples=400, n_classifiers=5, missing_rate=0.5, random_state=1)
    model = DEEM(missing="ignorable").fit(X)
    np.testing.assert_allclose(model.abstain_rate_, np.repeat((X < 0).mean(0)[:, None], 3, 1))


def test_save_load_keeps_informative_model(tmp_path):
    L, _ = labeling_functions(n_samples=500, n_voters=6, random_state=7)
    model = DEEM().fit(L)
    path = tmp_path / "m.deem"
    model.save(path)
    loaded = DEEM().load(path)
    assert loaded.missing_ == "informative"
    assert loaded.missing_log_bayes_factor_ == pytest.approx(model.missing_log_bayes_factor_)
    np.testing.assert_allclose(loaded.predict_proba(L), model.predict_proba(L))
    np.testing.assert_allclose(loaded.abstain_rate_, model.abstain_rate_)
    np.testing.assert_allclose(loaded.coverage_, model.coverage_)


def test_verbose_says_what_missing_means(capsys):
    L, _ = labeling_functions(n_samples=400, n_voters=6, random_state=8)
    DEEM(verbose=True).fit(L)
    err = capsys.readouterr().err
    assert "missing='auto' chose 'informative'" in err and "Bayes factor" in err


@pytest.mark.parametrize("bad", ["yes", "Informative", None, 1])
def test_bad_missing_value_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="missing must be one of"):
        DEEM(missing=bad).fit(np.array([[0, 1], [1, -1]]))


def test_informative_needs_a_solver_that_models_it():
    L, _ = labeling_functions(n_samples=100, n_voters=4, random_state=0)
    with pytest.raises(ValueError, match="missing='informative'"):
        DEEM(solver="gwg", missing="informative", epochs=1).fit(L)


def test_labeling_functions_generator():
    L, y = labeling_functions(n_samples=5000, n_voters=10, n_classes=3, class_balance=[0.6, 0.3, 0.1],
                              one_class_share=1.0, n_correlated=3, random_state=0)
    assert L.shape == (5000, 13) and y.shape == (5000,)
    np.testing.assert_allclose(np.bincount(y) / 5000, [0.6, 0.3, 0.1], atol=0.02)
    for i in range(10):  # one-class voters vote for one class only
        assert len(np.unique(L[L[:, i] >= 0, i])) <= 1
    assert L.min() == -1 and L.max() <= 2
    again, _ = labeling_functions(n_samples=5000, n_voters=10, n_classes=3, class_balance=[0.6, 0.3, 0.1],
                                  one_class_share=1.0, n_correlated=3, random_state=0)
    np.testing.assert_array_equal(L, again)
    with pytest.raises(ValueError, match="class_balance"):
        labeling_functions(class_balance=[0.5, 0.6])


def soft_from_hard(L, k, confidence=0.8, seed=0):
    """Soft labels (N, K, D) around hard ones: an all-zero column where the hard label is missing."""
    rng = np.random.default_rng(seed)
    n, d = L.shape
    v = rng.dirichlet(np.ones(k), size=(n, d)).transpose(0, 2, 1) * (1 - confidence)
    present = L >= 0
    v[np.arange(n)[:, None], np.clip(L, 0, None), np.arange(d)[None, :]] += confidence
    return v * present[:, None, :]


def test_soft_labels_all_zero_column_is_the_same_question():
    L, y = labeling_functions(n_samples=2000, n_voters=12, one_class_share=1.0, random_state=9)
    V = soft_from_hard(L, 2)
    model = DEEM().fit(V)
    assert model.missing_ == "informative" and model.missing_log_bayes_factor_ > 0
    ignorable = DEEM(missing="ignorable").fit(V)
    acc = accuracy(model.predict(V), y, L)
    assert acc > accuracy(ignorable.predict(V), y, L) + 0.10
    assert model.n_dropped_rows_ == 0 and model.abstain_rate_.shape == (12, 2)
    # one-hot soft labels: the same fit as the hard labels' (anchored: the converged fit's checks are for hard labels)
    onehot = soft_from_hard(L, 2, confidence=1.0)
    hard = DEEM(solver="exact", missing="informative", anchor="majority").fit(L)
    soft = DEEM(missing="informative").fit(onehot)
    np.testing.assert_allclose(soft.predict_proba(onehot), hard.predict_proba(L), atol=1e-5)


def test_soft_crowd_stays_ignorable():
    X, _ = dawid_skene(n_samples=1000, n_classifiers=15, n_classes=3, missing_rate=0.7, random_state=1)
    V = soft_from_hard(X, 3)
    assert DEEM().fit(V).missing_ == "ignorable"


def test_sparse_one_class_ensemble_the_bayes_factor_misses_is_called_informative():
    """Sparse one-class labeling functions: the presence test's uniform priors lack power (negative log Bayes
    factor), but nearly every label comes from a voter that only ever names one class -- evidence only through
    when it answers -- so 'auto' reads abstentions as evidence and recovers majority vote's level."""
    from deem.missingness import one_class_share

    L, y = labeling_functions(n_samples=1000, n_voters=40, n_classes=2, one_class_share=1.0,
                              coverage=(0.005, 0.05), precision=(0.8, 0.99), n_correlated=12, random_state=6)
    assert presence_log_bayes_factor(torch.as_tensor(L), 2) < 0
    assert one_class_share(torch.as_tensor(L), 2) > 0.5
    model = DEEM().fit(L)
    assert model.missing_ == "informative" and model.missing_one_class_share_ > 0.5
    # the ignorable model iterated to convergence (anchor='auto' would anchor it here: most rows carry < 3 labels)
    ignorable = accuracy(DEEM(missing="ignorable", anchor="none").fit(L).predict(L), y, L)
    default = accuracy(model.predict(L), y, L)
    assert default > ignorable + 0.2
    assert default > accuracy(majority_vote(L, 2), y, L) - 0.02


def test_one_class_share_counts_only_voters_beyond_chance():
    from deem.missingness import one_class_share

    X = np.array([[0, 1, 1], [0, 1, 1], [0, 1, 0], [0, 1, 1], [0, 1, 1], [0, 0, 1]])
    # voter 0 gives six 0s, at class shares 8/18 and 10/18 a chance of 0.037: one-class; the others are mixed
    assert one_class_share(torch.as_tensor(X), 2) == pytest.approx(6 / 18)
    assert one_class_share(torch.as_tensor(X[:3]), 2) == 0.0  # three equal labels happen by chance (> 0.05)


# Half the voters name one class and fire on its items, sparsely: too few labels for the presence test
# (negative log Bayes factor) and under half of them from one-class voters, so the whole-matrix readings say
# ignorable -- under which a one-class voter tells nothing.
HALF_ONE_CLASS = dict(n_samples=500, n_voters=10, n_classes=5, one_class_share=0.5, coverage=(0.03, 0.3),
                      precision=(0.55, 0.75), activity_spread=0.5, random_state=40)


def test_one_class_voters_whose_presence_follows_their_class_are_modelled_the_rest_ignorable():
    L, y = labeling_functions(**HALF_ONE_CLASS)
    mv = accuracy(majority_vote(L, 5), y, L)
    ignorable = accuracy(DEEM(missing="ignorable", anchor="none").fit(L).predict(L), y, L)  # iterated
    model = DEEM(anchor="none").fit(L)  # the mixed model's own fit (anchor='auto' anchors it: < 3 labels a row)
    assert model.missing_log_bayes_factor_ < 0 and model.missing_one_class_share_ <= 0.5
    assert model.missing_ == "mixed"
    one_class = np.array([len(set(L[:, i][L[:, i] >= 0])) == 1 for i in range(L.shape[1])])
    assert model.informative_voters_.any() and not (model.informative_voters_ & ~one_class).any()
    default = accuracy(model.predict(L), y, L)
    assert mv > ignorable + 0.2
    assert default > ignorable + 0.2 and default > mv - 0.03
    # the modelled voters' rate of abstaining depends on the class; the others' is their share of missing entries
    rate = model.abstain_rate_
    ignorable_voters = ~model.informative_voters_
    np.testing.assert_allclose(rate[ignorable_voters], np.repeat(1 - model.coverage_[ignorable_voters, None], 5, 1))
    assert (np.ptp(rate[model.informative_voters_], axis=1) > 0.05).all()


def test_a_one_class_spammer_stays_ignorable_a_one_class_labeling_function_does_not():
    """Both columns only ever say 0. The spammer answers on random rows: there the other voters' majority names
    0 at its overall rate. The labeling function answers on rows of class 0: there the others name 0 more often."""
    from deem.missingness import agreeing_one_class_voters

    X, y = dawid_skene(n_samples=2000, n_classifiers=10, n_classes=3, accuracy=(0.6, 0.8), missing_rate=0.5,
                       random_state=2)
    rng = np.random.default_rng(0)
    spammer = np.where(rng.random(2000) < 0.2, 0, -1)
    labeling_function = np.where((y == 0) & (rng.random(2000) < 0.1), 0, -1)
    L = np.column_stack([X, spammer, labeling_function])
    flagged = agreeing_one_class_voters(torch.as_tensor(L), 3).numpy()
    assert flagged.tolist() == [False] * 11 + [True]
    model = DEEM().fit(L)
    assert model.missing_ == "mixed" and model.informative_voters_.tolist() == [False] * 11 + [True]
    # the labeling function is read as evidence for class 0 where it fires, and against it where it does not
    rate = model.abstain_rate_[-1]
    assert abs(rate[0] - 0.9) < 0.03 and rate[1] > 0.98 and rate[2] > 0.98  # it fires on 10% of class 0


@pytest.mark.parametrize("solver", ["bayes", "exact"])
def test_every_voter_marked_abstaining_is_the_informative_model(solver):
    from deem._validation import LabelData
    from deem.rbm import RBM
    from deem.solvers import train_exact
    from deem.solvers.bayes import train_variational

    L, _ = labeling_functions(n_samples=800, n_voters=8, random_state=1)
    data = LabelData(torch.as_tensor(L), False, 2)
    fits = []
    for abstaining in (None, torch.ones(L.shape[1], dtype=torch.bool)):
        rbm = RBM(L.shape[1], 2, 1, dtype=torch.float64)
        if solver == "bayes":
            fits.append(train_variational(rbm, data, informative=True, abstaining=abstaining))
        else:
            fits.append(train_exact(rbm, data, 1.0, informative=True, abstaining=abstaining))
    torch.testing.assert_close(fits[0].logp, fits[1].logp, rtol=0, atol=1e-12)
    torch.testing.assert_close(fits[0].log_abstain, fits[1].log_abstain, rtol=0, atol=1e-12)


@pytest.mark.parametrize("solver", ["bayes", "exact"])
def test_mixed_model_abstention_terms_only_for_the_marked_voters(solver):
    """An unmarked voter's missing labels are ignorable: no abstention term, its label terms conditional on voting."""
    from deem._validation import LabelData
    from deem.rbm import RBM
    from deem.solvers import train_exact
    from deem.solvers.bayes import train_variational

    L, _ = labeling_functions(**HALF_ONE_CLASS)
    data = LabelData(torch.as_tensor(L), False, 5)
    abstaining = torch.zeros(L.shape[1], dtype=torch.bool)
    abstaining[::2] = True
    rbm = RBM(L.shape[1], 5, 1, dtype=torch.float64)
    train = train_variational if solver == "bayes" else (lambda *a, **k: train_exact(*a, 1.0, **k))
    fit = train(rbm, data, informative=True, abstaining=abstaining)
    assert (fit.log_abstain[~abstaining] == 0).all() and (fit.log_abstain[abstaining] < 0).all()
    if solver == "exact":  # a proper conditional distribution of the label given a vote
        torch.testing.assert_close(fit.logp[:, :, ~abstaining].exp().sum(dim=0),
                                   torch.ones(5, int((~abstaining).sum()), dtype=torch.float64))
    if solver == "bayes":  # its history is the objective itself, the negative bound: it never gets worse
        history = np.asarray(fit.history)
        assert np.all(np.diff(history) <= 1e-9 * np.abs(history[:-1]).max())


def test_save_load_keeps_the_mixed_model(tmp_path):
    L, _ = labeling_functions(**HALF_ONE_CLASS)
    model = DEEM(random_state=0).fit(L)
    path = tmp_path / "m.deem"
    model.save(path)
    loaded = DEEM().load(path)
    assert loaded.missing_ == "mixed"
    np.testing.assert_array_equal(loaded.informative_voters_, model.informative_voters_)
    np.testing.assert_allclose(loaded.abstain_rate_, model.abstain_rate_)
    np.testing.assert_allclose(loaded.predict_proba(L), model.predict_proba(L), rtol=0, atol=1e-12)


def test_leave_one_out_majority_vote_is_the_others_vote():
    """The presence tests' proxy, computed per row, equals the majority vote of a row's other labels."""
    from deem.missingness import _Labels
    from deem.sparse import SparseLabels

    for seed, (L, k) in enumerate([(labeling_functions(n_samples=600, n_voters=30, n_classes=4, random_state=1)[0], 4),
                                   (dawid_skene(n_samples=600, n_classifiers=12, n_classes=3, missing_rate=0.7,
                                                random_state=2)[0], 3)]):
        for values in (torch.as_tensor(L), SparseLabels.from_dense(L, n_classes=k)):
            labels = _Labels(values, k)
            group, loo = labels.votes()
            votes = torch.zeros(L.shape[0], k, dtype=torch.long).index_put_(
                (labels.row.long(), labels.lab.long()), torch.ones_like(labels.row, dtype=torch.long), accumulate=True)
            others = votes[labels.row.long()].clone()
            others[torch.arange(len(labels.row)), labels.lab.long()] -= 1
            expect = torch.where(others.sum(dim=1) > 0, others.argmax(dim=1), torch.full_like(labels.row, k).long())
            assert torch.equal(loo.long(), expect)
            expect_group = torch.where(votes.sum(dim=1) > 0, votes.argmax(dim=1), torch.full((L.shape[0],), k))
            assert torch.equal(group.long(), expect_group)


def test_the_checks_read_both_layouts_alike_block_by_block(monkeypatch):
    from deem import anchor_checks
    from deem._validation import check_labels
    from deem.sparse import SparseLabels

    monkeypatch.setattr(anchor_checks, "_ROWS_PER_BLOCK", 7)  # several blocks and a short last one
    L, _ = labeling_functions(n_samples=60, n_voters=6, n_classes=3, n_correlated=2, random_state=5)
    q = np.random.default_rng(0).dirichlet(np.ones(3), size=60)
    dense = anchor_checks.presence_sums(check_labels(L, n_classes=3), q)
    sparse = anchor_checks.presence_sums(SparseLabels.from_dense(torch.as_tensor(L)), q)
    F = (L >= 0).astype(float)
    for got_dense, got_sparse, want in zip(dense, sparse, (F.sum(1), F.T @ q, F.T @ F)):
        np.testing.assert_allclose(got_dense, want, rtol=1e-12)
        np.testing.assert_allclose(got_sparse, want, rtol=1e-12)


def test_too_many_voter_pairs_skip_the_converged_fit(monkeypatch):
    from deem import anchor_checks

    L, _ = labeling_functions(n_samples=500, n_voters=6, n_classes=2, random_state=1)
    monkeypatch.setattr(anchor_checks, "MAX_PAIRS", 14)  # 6 voters hold 15 pairs
    model = DEEM().fit(L)
    assert model.missing_ == "informative" and model.anchor_ == "majority" and model.anchor_checks_ is None
    monkeypatch.setattr(anchor_checks, "MAX_PAIRS", 15)
    assert DEEM().fit(L).anchor_checks_ is not None
