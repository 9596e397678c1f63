"""Labels stored sparse: ``SparseLabels`` and the op ``csr_evidence_pass`` against the dense op and the twin."""
import numpy as np
import pytest
import torch

from deem import _reference as R
from deem import ops
from deem.sparse import SparseLabels

needs_ext = pytest.mark.skipif(not ops.HAS_EXTENSION, reason=f"deem._C not built: {ops.IMPORT_ERROR!r}")


def dense_inputs(N, K, D, informative, seed=0, p_missing=0.6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, K, (N, D), generator=g)
    x[torch.rand(N, D, generator=g) < p_missing] = -1
    x[0] = -1  # an item nobody labelled
    x[:, D - 1] = -1  # a voter who labelled nothing
    logp = torch.randn(K, K, D, generator=g, dtype=torch.float64).log_softmax(0)
    logpi = torch.randn(K, generator=g, dtype=torch.float64).log_softmax(0)
    la = (torch.rand(D, K, generator=g, dtype=torch.float64) * 0.9 + 0.05).log() if informative else \
        torch.empty(0, K, dtype=torch.float64)
    return x, logp, logpi, la


def views(s: SparseLabels):
    return (s.row_ptr, s.voter, s.label, s.col_ptr, s.col_row, s.col_label)


# ------------------------------------------------------------------------------ the container
def test_dense_round_trip_and_both_views_hold_the_same_labels():
    x, *_ = dense_inputs(50, 4, 7, False)
    s = SparseLabels.from_dense(x)
    assert (s.n_rows, s.n_classifiers, s.n_classes, s.n_labels) == (50, 7, 4, int((x >= 0).sum()))
    assert torch.equal(s.to_dense().long(), x)
    by_item = sorted(zip(s.row_of_label().tolist(), s.voter.tolist(), s.label.tolist()))
    voters = torch.repeat_interleave(torch.arange(7), s.labels_per_voter())
    by_voter = sorted(zip(s.col_row.tolist(), voters.tolist(), s.col_label.tolist()))
    assert by_item == by_voter


def test_from_triples_sorts_and_rejects_a_repeated_pair():
    s = SparseLabels.from_triples([2, 0, 2, 1], [1, 3, 0, 1], [0, 1, 2, 1], n_voters=5)
    assert s.row_ptr.tolist() == [0, 1, 2, 4] and s.voter.tolist() == [3, 1, 0, 1]
    assert s.n_classifiers == 5 and s.n_classes == 3
    with pytest.raises(ValueError, match="more than once"):
        SparseLabels.from_triples([0, 0], [1, 1], [0, 1])
    with pytest.raises(ValueError, match="non-negative"):
        SparseLabels.from_triples([0, 1], [1, -1], [0, 1])
    with pytest.raises(ValueError, match="beyond n_classes"):
        SparseLabels.from_triples([0, 1], [0, 1], [0, 3], n_classes=3)
    with pytest.raises(ValueError, match="same length"):
        SparseLabels.from_triples([0, 1], [0], [0, 1])
    with pytest.raises(TypeError, match="integers"):
        SparseLabels.from_triples(np.array(["a"]), [0], [0])


def test_scipy_convention_is_label_plus_one():
    import scipy.sparse as sp

    x, *_ = dense_inputs(30, 3, 6, False)
    m = sp.csr_matrix((x + 1).numpy())  # 0 = missing
    s = SparseLabels.from_scipy(m, n_classes=3)
    assert torch.equal(s.to_dense().long(), x)
    with pytest.raises(ValueError, match="label \\+ 1"):
        SparseLabels.from_scipy(sp.csr_matrix(np.array([[-1.0, 2.0]])))
    with pytest.raises(TypeError, match="scipy.sparse"):
        SparseLabels.from_scipy(x.numpy())


def test_select_keeps_the_chosen_items_in_order():
    x, *_ = dense_inputs(40, 3, 5, False)
    s = SparseLabels.from_dense(x)
    rows = torch.tensor([7, 3, 3, 39, 0])
    assert torch.equal(s.select(rows).to_dense().long(), x[rows])
    mask = torch.arange(40) % 3 == 0
    assert torch.equal(s.select(mask).to_dense().long(), x[mask])


# ---------------------------------------------------------------------------------------- the op
@pytest.mark.parametrize("informative", [False, True])
def test_twin_equals_the_dense_twin(informative):
    x, logp, logpi, la = dense_inputs(60, 3, 8, informative)
    s = SparseLabels.from_dense(x)
    sparse = R.csr_evidence_pass(*views(s), logp, logpi, la, True, True)
    dense = R.hard_evidence_pass(x, logp, logpi, la, True, True)
    for a, b in zip(sparse, dense):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@needs_ext
@pytest.mark.parametrize("informative", [False, True])
@pytest.mark.parametrize("K", [2, 3, 7])
def test_op_equals_the_dense_op(device, informative, K):
    x, logp, logpi, la = dense_inputs(700, K, 9, informative, seed=K)  # more than one 512-item chunk
    s = SparseLabels.from_dense(x).to(device)
    out = torch.ops.deem.csr_evidence_pass(*views(s), *(t.to(device) for t in (logp, logpi, la)), True, True)
    dense = torch.ops.deem.hard_evidence_pass(*(t.to(device) for t in (x, logp, logpi, la)), True, True)
    for a, b in zip(out, dense):
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=1e-12, atol=1e-9)


@needs_ext
@pytest.mark.parametrize("N", range(1, 10))
@pytest.mark.parametrize("K", [1, 2, 4, 6])
def test_every_tail_of_the_four_row_softmax_and_extreme_scores(device, N, K):
    # the CPU passes take the softmax four rows at a time: every count of leftover rows, and scores whose
    # exps underflow (a class 800 nats below the best) or sit at the top of the range, against the twins
    x, logp, logpi, la = dense_inputs(N, K, 6, True, seed=N * 10 + K, p_missing=0.3)
    logp = logp * torch.tensor([1.0, 40.0, 1.0, 300.0, 1.0, 1e-3], dtype=torch.float64)[:K].view(-1, 1, 1)
    s = SparseLabels.from_dense(x, n_classes=K).to(device)
    args = (logp, logpi, la)
    sparse = torch.ops.deem.csr_evidence_pass(*views(s), *(t.to(device) for t in args), True, True)
    dense = torch.ops.deem.hard_evidence_pass(*(t.to(device) for t in (x, *args)), True, True)
    twin = R.hard_evidence_pass(x, *args, True, True)
    for a, b, t in zip(sparse, dense, twin):
        torch.testing.assert_close(a.cpu(), t, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b.cpu(), t, rtol=1e-12, atol=1e-12)


@needs_ext
def test_a_nan_parameter_gives_nan_not_a_silent_zero(device):
    x, logp, logpi, la = dense_inputs(9, 3, 5, False, p_missing=0.0)
    x[0] = 0  # every item labelled: each reads voter 0's label 0
    logp[0, 1, 0] = float("nan")
    s = SparseLabels.from_dense(x).to(device)
    for out in (torch.ops.deem.csr_evidence_pass(*views(s), *(t.to(device) for t in (logp, logpi, la)), True, True),
                torch.ops.deem.hard_evidence_pass(*(t.to(device) for t in (x, logp, logpi, la)), True, True)):
        assert bool(torch.isnan(out[2]).cpu()) and bool(torch.isnan(out[3][0]).all().cpu())


@needs_ext
@pytest.mark.parametrize("want_counts,want_posterior", [(False, False), (True, False), (False, True)])
def test_optional_outputs_and_no_by_voter_view_needed_without_counts(device, want_counts, want_posterior):
    x, logp, logpi, la = dense_inputs(25, 4, 5, True)
    s = SparseLabels.from_dense(x).to(device)
    empty = torch.empty(0, dtype=torch.int64, device=device)
    col = views(s)[3:] if want_counts else (empty, empty, torch.empty(0, dtype=s.label.dtype, device=device))
    counts, mass, nll, post = torch.ops.deem.csr_evidence_pass(
        *views(s)[:3], *col, *(t.to(device) for t in (logp, logpi, la)), want_counts, want_posterior)
    assert counts.shape == ((4, 4, 5) if want_counts else (0, 4, 5))
    assert post.shape == ((25, 4) if want_posterior else (0, 4))
    assert float(mass.sum()) == pytest.approx(25.0)
    assert 0.0 < float(nll) < float("inf")  # every row holds a label of probability below one


@needs_ext
def test_thread_count_independence(restore_threads):
    x, logp, logpi, la = dense_inputs(3000, 4, 30, True)
    s = SparseLabels.from_dense(x)
    outs = []
    for n in (1, 2):
        torch.set_num_threads(n)
        outs.append(torch.ops.deem.csr_evidence_pass(*views(s), logp, logpi, la, True, True))
    for p, q in zip(*outs):
        assert torch.equal(p, q)


@needs_ext
@pytest.mark.parametrize("informative", [False, True])
def test_opcheck(device, informative):
    x, logp, logpi, la = dense_inputs(12, 3, 4, informative)
    s = SparseLabels.from_dense(x).to(device)
    args = (*views(s), *(t.to(device) for t in (logp, logpi, la)), True, True)
    torch.library.opcheck(torch.ops.deem.csr_evidence_pass.default, args)


@needs_ext
@pytest.mark.parametrize("what", ["voter", "label", "col_row", "col_label", "row_ptr", "col_ptr"])
def test_corrupt_views_are_errors_not_reads(device, what):
    x, logp, logpi, la = dense_inputs(600, 3, 6, False)
    s = SparseLabels.from_dense(x)
    v = dict(zip(("row_ptr", "voter", "label", "col_ptr", "col_row", "col_label"), (t.clone() for t in views(s))))
    bad = {"voter": 6, "label": 3, "col_row": 600, "col_label": -1, "row_ptr": 10**9, "col_ptr": -5}[what]
    v[what][len(v[what]) // 2] = bad
    params = tuple(t.to(device) for t in (logp, logpi, la))
    if device == "cpu" and what.startswith("col_"):
        # The CPU kernel reads only the by-item view (the counts are fused into it): a corrupt by-voter
        # view is never read, and the result is the intact one's.
        got = torch.ops.deem.csr_evidence_pass(*v.values(), *params, True, True)
        for a, b in zip(got, torch.ops.deem.csr_evidence_pass(*views(s), *params, True, True)):
            assert torch.equal(a, b)
        return
    with pytest.raises(RuntimeError, match="outside|must rise|must not decrease|out of range"):
        torch.ops.deem.csr_evidence_pass(*(t.to(device) for t in v.values()), *params, True, True)


@needs_ext
def test_bad_shapes_and_dtypes():
    x, logp, logpi, la = dense_inputs(8, 3, 4, True)
    s = SparseLabels.from_dense(x)
    op = torch.ops.deem.csr_evidence_pass
    with pytest.raises(RuntimeError, match="int64"):
        op(s.row_ptr.int(), *views(s)[1:], logp, logpi, la, True, True)
    with pytest.raises(RuntimeError, match="same length"):
        op(s.row_ptr, s.voter, s.label[:-1], *views(s)[3:], logp, logpi, la, True, True)
    with pytest.raises(RuntimeError, match="D \\+ 1"):
        op(*views(s)[:3], s.col_ptr[:-1], *views(s)[4:], logp, logpi, la, True, True)
    with pytest.raises(RuntimeError, match="float64"):
        op(*views(s), logp.float(), logpi, la, True, True)


@needs_ext
@pytest.mark.parametrize("informative", [False, True])
def test_cpu_pass_equals_the_dense_pass(informative, restore_threads):
    """Over many item groups (40,000 items: the sparse pass's groups of fused partials, the dense pass's 64
    chunk groups), the same posteriors bit for bit (one shared softmax) and sums to rounding, for any thread
    count."""
    x, logp, logpi, la = dense_inputs(40000, 3, 6, informative, seed=11)
    s = SparseLabels.from_dense(x)
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        sparse = torch.ops.deem.csr_evidence_pass(*views(s), logp, logpi, la, True, True)
        dense = torch.ops.deem.hard_evidence_pass(x, logp, logpi, la, True, True)
        assert torch.equal(sparse[3], dense[3])
        for a, b in zip(sparse[:3], dense[:3]):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=0)
        outs.append(sparse)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------ building the views
def random_triples(n, d, k, n_labels, seed=0, duplicates=0):
    g = torch.Generator().manual_seed(seed)
    cells = torch.randperm(n * d, generator=g)[:n_labels]
    if duplicates:
        cells = torch.cat([cells, cells[torch.randperm(n_labels, generator=g)[:duplicates]]])
        cells = cells[torch.randperm(cells.shape[0], generator=g)]
    label = torch.randint(0, k, (cells.shape[0],), generator=g).to(torch.int8)
    return cells // d, cells % d, label


@needs_ext
@pytest.mark.parametrize("shape", [(300, 40, 3, 2000), (1, 1, 2, 1), (5, 3, 4, 0), (2000, 7, 5, 6000)])
def test_csr_build_equals_its_twin(shape):
    n, d, k, n_labels = shape
    item, voter, label = random_triples(n, d, k, n_labels, seed=n)
    got = torch.ops.deem.csr_build(item, voter, label, n, d, k)
    want = R.csr_build(item, voter, label, n, d, k)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert int(got[-1]) == -1
    s = SparseLabels(*got[:6], k)
    s.validate()
    dense = torch.full((n, d), -1, dtype=torch.int64)
    dense[item, voter] = label.long()
    assert torch.equal(s.to_dense().long(), dense)


@needs_ext
@pytest.mark.parametrize("duplicates", [0, 3])
def test_csr_build_of_triples_grouped_by_item_is_the_general_build(duplicates):
    """Items non-decreasing (a frame grouped by task) take the per-item sort; rows past 32 labels the merge sort."""
    item, voter, label = random_triples(300, 80, 3, 12000, seed=7, duplicates=duplicates)
    order = torch.sort(item, stable=True).indices  # grouped by item, voters in any order within an item
    item, voter, label = item[order], voter[order], label[order]
    assert int(torch.bincount(item).max()) > 32
    got = torch.ops.deem.csr_build(item, voter, label, 300, 80, 3)
    want = R.csr_build(item, voter, label, 300, 80, 3)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert (int(got[-1]) >= 0) == (duplicates > 0)


@needs_ext
def test_csr_build_finds_a_repeated_pair_and_keeps_every_label():
    item, voter, label = random_triples(200, 30, 3, 1500, seed=1, duplicates=3)
    for impl in (torch.ops.deem.csr_build, R.csr_build):
        out = impl(item, voter, label, 200, 30, 3)
        j = int(out[-1])
        assert j >= 0 and out[1].shape[0] == item.shape[0]  # nothing dropped or merged
        earlier = ((item[:j] == item[j]) & (voter[:j] == voter[j])).nonzero()
        assert earlier.numel() == 1  # position j repeats an earlier pair
    with pytest.raises(ValueError, match="more than once"):
        SparseLabels.from_triples(item, voter, label)


@needs_ext
@pytest.mark.parametrize("what,bad", [("item", 200), ("voter", -1), ("label", 3)])
def test_csr_build_bounds_checks(what, bad):
    item, voter, label = random_triples(200, 30, 3, 500, seed=2)
    t = {"item": item, "voter": voter, "label": label}
    t[what] = t[what].clone()
    t[what][7] = bad
    with pytest.raises(RuntimeError, match=f"{what} .* at position 7 is outside"):
        torch.ops.deem.csr_build(t["item"], t["voter"], t["label"], 200, 30, 3)


@needs_ext
def test_csr_build_opcheck():
    item, voter, label = random_triples(40, 9, 3, 150, seed=3)
    torch.library.opcheck(torch.ops.deem.csr_build.default, (item, voter, label, 40, 9, 3))
