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
    with pytest.raises(RuntimeError, match="outside|must rise|must not decrease|out of range"):
        torch.ops.deem.csr_evidence_pass(*(t.to(device) for t in v.values()),
                                         *(t.to(device) for t in (logp, logpi, la)), True, True)


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
def test_cpu_pass_equals_the_dense_pass_bit_for_bit(informative, restore_threads):
    """Over many row groups of the fixed chunking (40,000 items: 64 groups of 512-item chunks), so that a fit
    takes the same steps, and stops at the same iteration, in either layout."""
    x, logp, logpi, la = dense_inputs(40000, 3, 6, informative, seed=11)
    s = SparseLabels.from_dense(x)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        sparse = torch.ops.deem.csr_evidence_pass(*views(s), logp, logpi, la, True, True)
        dense = torch.ops.deem.hard_evidence_pass(x, logp, logpi, la, True, True)
        for a, b in zip(sparse, dense):
            assert torch.equal(a, b)
