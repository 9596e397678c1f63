"""The padded-row ("ELL") ops against their dense namesakes on the densified rows, their twins and opcheck;
the samplers' fits on labels stored sparse against the same fits dense."""
import numpy as np
import pytest
import torch

from deem import DEEM
from deem import _reference as R
from deem import ops
from deem.datasets import dawid_skene, labeling_functions
from deem.sparse import PaddedRows, SparseLabels

needs_ext = pytest.mark.skipif(not ops.HAS_EXTENSION, reason=f"deem._C not built: {ops.IMPORT_ERROR!r}")


def padded_case(B=40, D=15, K=3, H=2, S=7, dtype=torch.float64, seed=0, label_dtype=torch.int8):
    """Rows with 0..S present voters (ascending, distinct), the rest of the slots empty; random parameters."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(K, K, D, H, generator=g, dtype=dtype)
    b_v = torch.randn(D, K, generator=g, dtype=dtype)
    b_h = torch.randn(H, K, generator=g, dtype=dtype)
    voter = torch.full((B, S), -1, dtype=torch.int64)
    lab = torch.full((B, S), -1, dtype=label_dtype)
    for b in range(B):
        n = 0 if b == 1 else int(torch.randint(1, S + 1, (1,), generator=g))  # row 1 has no label
        voter[b, :n] = torch.sort(torch.randperm(D, generator=g)[:n]).values
        lab[b, :n] = torch.randint(0, K, (n,), generator=g).to(label_dtype)
    return voter, lab, W, b_v, b_h


def dense_of(voter, lab, D):
    x = torch.full((voter.shape[0], D), -1, dtype=lab.dtype)
    present = lab >= 0
    rows = torch.arange(voter.shape[0])[:, None].expand_as(voter)
    x[rows[present], voter[present]] = lab[present]
    return x


def on(device, *ts):
    return tuple(t.to(device) for t in ts)


# ----------------------------------------------------------------------------- against the dense ops
@needs_ext
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_scores_are_the_dense_ops_on_the_densified_rows(device, dtype):
    voter, lab, W, b_v, b_h = on(device, *padded_case(dtype=dtype))
    x = dense_of(voter.cpu(), lab.cpu(), W.shape[2]).to(device)
    torch.testing.assert_close(ops.ell_hidden_probs(voter, lab, W, b_h), ops.hidden_probs(x, W, b_h), rtol=0,
                               atol=1e-12 if dtype == torch.float64 else 1e-6)
    torch.testing.assert_close(ops.ell_free_energy(voter, lab, W, b_v, b_h), ops.free_energy(x, W, b_v, b_h), rtol=0,
                               atol=1e-12 if dtype == torch.float64 else 1e-5)


@needs_ext
@pytest.mark.parametrize("sample_hidden", [False, True])
def test_cd_grad_is_the_dense_op_on_the_densified_rows(device, sample_hidden):
    pv, pos, W, b_v, b_h = on(device, *padded_case(B=300, seed=1))
    nv, neg, *_ = on(device, *padded_case(B=700, seed=2, S=4))  # another width, past one reduction chunk
    D = W.shape[2]
    xp, xn = (dense_of(v.cpu(), l.cpu(), D).to(device) for v, l in ((pv, pos), (nv, neg)))
    got = ops.ell_cd_grad(pv, pos, nv, neg, W, b_v, b_h, sample_hidden, 7, 3)
    want = ops.cd_grad(xp, xn, W, b_v, b_h, sample_hidden, 7, 3)
    for a, b in zip(got, want):
        if device == "cpu":  # the same additions in the same order
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@needs_ext
@pytest.mark.parametrize("kind", ["gwg", "dlp"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chains_are_the_dense_samplers_chains(device, kind, dtype):
    voter, lab, W, b_v, b_h = on(device, *padded_case(B=64, dtype=dtype, seed=3))
    D = W.shape[2]
    dense = dense_of(voter.cpu(), lab.cpu(), D).to(device)
    chains = lab.clone()
    if kind == "gwg":
        acc = ops.ell_gwg_steps(voter, chains, W, b_v, b_h, 40, 5, 9)
        want = ops.gwg_steps(dense, W, b_v, b_h, 40, 5, 9)
    else:
        acc = ops.ell_dlp_steps(voter, chains, W, b_v, b_h, 0.6, 40, 5, 9)
        want = ops.dlp_steps(dense, W, b_v, b_h, 0.6, 40, 5, 9)
    assert int(acc.sum()) > 0 and acc[1] == 0  # chains moved; the row with no label cannot
    moved = dense_of(voter.cpu(), chains.cpu(), D)
    if device == "cpu" or dtype == torch.float64:
        assert torch.equal(acc, want)
        assert torch.equal(moved, dense.cpu())
    else:  # CUDA float32: the warp sums group by slot, not voter -- a threshold within an ulp may differ
        assert float((moved == dense.cpu()).all(dim=1).double().mean()) > 0.9
    assert torch.equal(chains < 0, lab < 0)  # a chain never fills an empty slot nor empties a present one


@needs_ext
@pytest.mark.parametrize("op", ["gwg", "dlp", "hidden_probs", "free_energy", "cd_grad"])
def test_kernels_match_their_twins(op):
    voter, lab, W, b_v, b_h = padded_case(B=25, seed=4, label_dtype=torch.int32)
    if op in ("gwg", "dlp"):
        a, b = lab.clone(), lab.clone()
        fn, twin = (ops.ell_gwg_steps, R.ell_gwg_steps) if op == "gwg" else (ops.ell_dlp_steps, R.ell_dlp_steps)
        extra = (W, b_v, b_h, 20, 1, 2) if op == "gwg" else (W, b_v, b_h, 1.5, 20, 1, 2)
        assert torch.equal(fn(voter, a, *extra), twin(voter, b, *extra))
        assert torch.equal(a, b)
    elif op == "cd_grad":
        for x, y in zip(ops.ell_cd_grad(voter, lab, voter.flip(0), lab.flip(0), W, b_v, b_h, True, 3, 4),
                        R.ell_cd_grad(voter, lab, voter.flip(0), lab.flip(0), W, b_v, b_h, True, 3, 4)):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-12)
    elif op == "hidden_probs":
        torch.testing.assert_close(ops.ell_hidden_probs(voter, lab, W, b_h), R.ell_hidden_probs(voter, lab, W, b_h))
    else:
        torch.testing.assert_close(ops.ell_free_energy(voter, lab, W, b_v, b_h),
                                   R.ell_free_energy(voter, lab, W, b_v, b_h))


@needs_ext
def test_a_chain_reads_only_its_present_voters_parameters():
    """300 k voters, four labels a chain: the GWG chains are those of the same model cut down to the
    voters the chains hold (renumbered in order) -- no other voter's parameters enter a step."""
    K, D, H = 3, 300_000, 2
    g = torch.Generator().manual_seed(0)
    W = torch.randn(K, K, D, H, generator=g, dtype=torch.float64)
    b_v, b_h = torch.randn(D, K, generator=g, dtype=torch.float64), torch.randn(H, K, generator=g, dtype=torch.float64)
    voter = torch.randint(0, D, (64, 4), generator=g).sort(dim=1).values
    voter[:, 1] = voter[:, 0] + 1  # distinct voters in a row
    voter = voter.sort(dim=1).values
    chains = torch.randint(0, K, (64, 4), generator=g).to(torch.int8)
    used, local = torch.unique(voter, sorted=True, return_inverse=True)
    small = chains.clone()
    acc = ops.ell_gwg_steps(voter, chains, W, b_v, b_h, 200, 1, 0)
    acc_small = ops.ell_gwg_steps(local, small, W[:, :, used].contiguous(), b_v[used].contiguous(), b_h, 200, 1, 0)
    assert int(acc.sum()) > 0
    assert torch.equal(acc, acc_small) and torch.equal(chains, small)


# ----------------------------------------------------------------------------- opcheck, edges, bad input
def _opcheck_samples(device):
    voter, lab, W, b_v, b_h = on(device, *padded_case(B=6, D=5, S=3, seed=5))
    return [
        ("ell_hidden_probs", (voter, lab, W, b_h)),
        ("ell_free_energy", (voter, lab, W, b_v, b_h)),
        ("ell_cd_grad", (voter, lab, voter.flip(0), lab.flip(0), W, b_v, b_h, False, 0, 0)),
        ("ell_cd_grad", (voter, lab, voter, lab, W, b_v, b_h, True, 1, 2)),
        ("ell_gwg_steps", (voter, lab.clone(), W, b_v, b_h, 3, 1, 0)),
        ("ell_dlp_steps", (voter, lab.clone(), W, b_v, b_h, 0.5, 3, 1, 0)),
    ]


@needs_ext
@pytest.mark.parametrize("idx", range(6))
def test_opcheck(device, idx):
    name, args = _opcheck_samples(device)[idx]
    torch.library.opcheck(getattr(torch.ops.deem, name).default, args)


@needs_ext
def test_edges_no_rows_no_slots_one_class_non_contiguous(device):
    voter, lab, W, b_v, b_h = on(device, *padded_case(seed=6))
    empty_v, empty_l = voter[:0], lab[:0]
    assert ops.ell_gwg_steps(empty_v, empty_l, W, b_v, b_h, 3).shape == (0,)
    assert ops.ell_hidden_probs(empty_v, empty_l, W, b_h).shape == (0, 2, 3)
    no_slots_v, no_slots_l = voter[:, :0].contiguous(), lab[:, :0].contiguous()
    assert int(ops.ell_dlp_steps(no_slots_v, no_slots_l, W, b_v, b_h, 1.0, 3).sum()) == 0
    torch.testing.assert_close(ops.ell_hidden_probs(no_slots_v, no_slots_l, W, b_h),
                               torch.softmax(b_h, -1).expand(voter.shape[0], -1, -1))
    one = padded_case(K=1, seed=7)
    v1, l1, W1, bv1, bh1 = on(device, *one)
    assert int(ops.ell_gwg_steps(v1, l1, W1, bv1, bh1, 5).sum()) == 0
    # a non-contiguous view of chains is moved in place, as a contiguous copy would be
    wide = torch.full((lab.shape[0], 2 * lab.shape[1]), -1, dtype=lab.dtype, device=device)
    wide[:, ::2] = lab
    view = wide[:, ::2]
    ref = lab.clone()
    ops.ell_gwg_steps(voter, view, W, b_v, b_h, 10, 2, 0)
    ops.ell_gwg_steps(voter, ref, W, b_v, b_h, 10, 2, 0)
    assert torch.equal(view, ref) and bool((wide[:, 1::2] == -1).all())


@needs_ext
def test_bad_padded_rows_are_clear_errors(device):
    voter, lab, W, b_v, b_h = on(device, *padded_case(seed=8))
    bad_voter = voter.clone()
    bad_voter[0, 0] = W.shape[2]  # one past the last voter, in a present slot
    bad_label = lab.clone()
    bad_label[0, 0] = 3
    checks = [
        (lambda: ops.ell_hidden_probs(voter.int(), lab, W, b_h), "voter must be a 2-D int64"),
        (lambda: ops.ell_hidden_probs(voter[:, :2], lab, W, b_h), "same shape"),
        (lambda: ops.ell_cd_grad(voter[:0], lab[:0], voter, lab, W, b_v, b_h, False, 0, 0), "at least one row"),
    ]
    if device == "cpu":  # CUDA flags out-of-range values on the device (DEEM_CHECK_KERNELS=1 raises)
        checks += [
            (lambda: ops.ell_free_energy(bad_voter, lab, W, b_v, b_h), "outside \\[0, 15\\)"),
            (lambda: ops.ell_gwg_steps(voter, bad_label, W, b_v, b_h, 2), "out of range"),
            (lambda: ops.ell_dlp_steps(bad_voter, lab.clone(), W, b_v, b_h, 1.0, 2), "outside"),
            (lambda: ops.ell_cd_grad(voter, lab, voter, bad_label, W, b_v, b_h, False, 0, 0), "out of range"),
        ]
    for call, message in checks:
        with pytest.raises(RuntimeError, match=message):
            call()
    before = lab.clone()
    with pytest.raises(RuntimeError):
        ops.ell_gwg_steps(bad_voter, lab, W, b_v, b_h, 2) if device == "cpu" else ops.ell_gwg_steps(
            voter.int(), lab, W, b_v, b_h, 2)
    assert torch.equal(lab, before)  # checked before any chain moves


# ----------------------------------------------------------------------------- the container's gather
def test_padded_rows_gather_the_by_item_view():
    x = torch.tensor([[0, -1, 2, -1], [-1, -1, -1, -1], [1, 1, 1, 1], [-1, 2, -1, -1]])
    s = SparseLabels.from_dense(x, n_classes=3)
    rows = s.padded(torch.tensor([3, 0, 1, 2, 0]))
    assert isinstance(rows, PaddedRows) and rows.values.shape == (5, 4) == rows.voter.shape
    assert torch.equal(dense_of(rows.voter, rows.values, 4).long(), x[[3, 0, 1, 2, 0]])
    assert torch.equal(rows.voter[1], torch.tensor([0, 2, -1, -1]))  # ascending, then empty slots
    assert SparseLabels.from_dense(torch.full((3, 2), -1), n_classes=2).padded().values.shape == (3, 0)


# ----------------------------------------------------------------------------- the samplers' fits
@pytest.mark.parametrize("solver,hidden_dim", [("gwg", 1), ("gwg", 3), ("dlp", 2)])
def test_sampler_fits_are_the_same_in_both_layouts(solver, hidden_dim):
    X, _ = dawid_skene(n_samples=600, n_classifiers=30, n_classes=3, missing_rate=0.85, random_state=1)
    kw = dict(solver=solver, hidden_dim=hidden_dim, epochs=4, batch_size=64, random_state=0)
    dense = DEEM(layout="dense", **kw).fit(X)
    sparse = DEEM(layout="sparse", **kw).fit(X)
    assert (dense.layout_, sparse.layout_) == ("dense", "sparse")
    np.testing.assert_array_equal(sparse.history_["loss"], dense.history_["loss"])
    for p in ("W", "b_v", "b_h"):
        assert torch.equal(getattr(sparse.model_, p), getattr(dense.model_, p))
    S = SparseLabels.from_dense(X)
    np.testing.assert_allclose(sparse.predict_proba(S), dense.predict_proba(X), rtol=0, atol=1e-6)


def test_sampler_on_labelling_functions_in_both_layouts_with_abstentions():
    L, _ = labeling_functions(n_samples=400, n_voters=12, n_classes=3, random_state=2)
    kw = dict(solver="dlp", hidden_dim=2, epochs=3, random_state=0)
    dense, sparse = (DEEM(layout=lay, **kw).fit(L) for lay in ("dense", "sparse"))
    np.testing.assert_array_equal(dense.predict(L), sparse.predict(SparseLabels.from_dense(L)))
