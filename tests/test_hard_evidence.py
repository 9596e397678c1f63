"""The hard-label E-step op ``hard_evidence_pass`` against its PyTorch twin and a brute-force oracle."""
import pytest
import torch

from deem import _reference as R
from deem import ops

pytestmark = pytest.mark.skipif(not ops.HAS_EXTENSION, reason=f"deem._C not built: {ops.IMPORT_ERROR!r}")


def inputs(N, K, D, informative, ldtype=torch.int64, seed=0, p_missing=0.4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, K, (N, D), generator=g)
    x[torch.rand(N, D, generator=g) < p_missing] = -1
    x[0] = -1  # every voter missing
    logp = torch.randn(K, K, D, generator=g, dtype=torch.float64).log_softmax(0)
    logpi = torch.randn(K, generator=g, dtype=torch.float64).log_softmax(0)
    la = (torch.rand(D, K, generator=g, dtype=torch.float64) * 0.9 + 0.05).log() if informative else \
        torch.empty(0, K, dtype=torch.float64)
    return x.to(ldtype), logp, logpi, la


def brute_force(x, logp, logpi, la):
    """Per row and class, the sum over every voter of its label's or its abstention's log-probability."""
    N, D = x.shape
    K = logp.shape[0]
    scores = torch.empty(N, K, dtype=torch.float64)
    for n in range(N):
        for m in range(K):
            s = float(logpi[m])
            for i in range(D):
                li = int(x[n, i])
                if li >= 0:
                    s += float(logp[li, m, i])
                elif la.shape[0]:
                    s += float(la[i, m])
            scores[n, m] = s
    q = torch.softmax(scores, 1)
    counts = torch.zeros(K, K, D, dtype=torch.float64)
    for n in range(N):
        for i in range(D):
            if x[n, i] >= 0:
                counts[int(x[n, i]), :, i] += q[n]
    return counts, q.sum(0), -torch.logsumexp(scores, 1).sum(), q


@pytest.mark.parametrize("informative", [False, True])
@pytest.mark.parametrize("ldtype", [torch.int8, torch.int16, torch.int32, torch.int64])
def test_matches_brute_force_and_twin(device, informative, ldtype):
    x, logp, logpi, la = inputs(37, 3, 5, informative, ldtype)
    expected = brute_force(x, logp, logpi, la)
    twin = R.hard_evidence_pass(x, logp, logpi, la, True, True)
    out = torch.ops.deem.hard_evidence_pass(*(t.to(device) for t in (x, logp, logpi, la)), True, True)
    for o, t, e in zip(out, twin, expected):
        torch.testing.assert_close(t, e, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(o.cpu(), e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("want_counts,want_posterior", [(False, False), (True, False), (False, True)])
def test_optional_outputs(device, want_counts, want_posterior):
    x, logp, logpi, la = inputs(20, 4, 3, True)
    counts, mass, nll, post = torch.ops.deem.hard_evidence_pass(
        *(t.to(device) for t in (x, logp, logpi, la)), want_counts, want_posterior)
    assert counts.shape == ((4, 4, 3) if want_counts else (0, 4, 3))
    assert post.shape == ((20, 4) if want_posterior else (0, 4))
    assert float(mass.sum()) == pytest.approx(20.0)
    ref = R.hard_evidence_pass(x, logp, logpi, la, want_counts, want_posterior)
    for o, r in zip((counts, mass, nll, post), ref):
        torch.testing.assert_close(o.cpu(), r, rtol=1e-12, atol=1e-12)


def test_ignorable_empty_row_gets_the_prior_and_informative_does_not():
    x, logp, logpi, la = inputs(10, 3, 4, True)
    _, _, _, post_ign = ops.hard_evidence_pass(x, logp, logpi, None, False, True)
    torch.testing.assert_close(post_ign[0], logpi.exp())
    _, _, _, post_inf = ops.hard_evidence_pass(x, logp, logpi, la, False, True)
    torch.testing.assert_close(post_inf[0], torch.softmax(logpi + la.sum(0), 0))


def test_thread_count_independence(restore_threads):
    x, logp, logpi, la = inputs(3000, 4, 9, True)  # several 512-row chunks
    outs = []
    for n in (1, 2):
        torch.set_num_threads(n)
        outs.append(torch.ops.deem.hard_evidence_pass(x, logp, logpi, la, True, True))
    for p, q in zip(*outs):
        assert torch.equal(p, q)


@pytest.mark.parametrize("informative", [False, True])
def test_opcheck(device, informative):
    x, logp, logpi, la = (t.to(device) for t in inputs(8, 3, 4, informative))
    torch.library.opcheck(torch.ops.deem.hard_evidence_pass.default, (x, logp, logpi, la, True, True))


@pytest.mark.parametrize("bad", [3, -2, 100])
def test_out_of_range_label_is_an_error_not_a_read(device, bad):
    x, logp, logpi, la = inputs(600, 3, 4, True)
    x[555, 2] = bad
    with pytest.raises(RuntimeError, match="out of range|labels must be"):
        torch.ops.deem.hard_evidence_pass(*(t.to(device) for t in (x, logp, logpi, la)), True, True)
    with pytest.raises(RuntimeError, match="labels must be"):
        R.hard_evidence_pass(x, logp, logpi, la, True, True)


def test_bad_shapes_and_dtypes():
    x, logp, logpi, la = inputs(8, 3, 4, True)
    op = torch.ops.deem.hard_evidence_pass
    with pytest.raises(RuntimeError, match="logp must have shape"):
        op(x, logp[:, :, :3], logpi, la, True, True)
    with pytest.raises(RuntimeError, match="log_abstain must have shape"):
        op(x, logp, logpi, la[:3], True, True)
    with pytest.raises(RuntimeError, match="float64"):
        op(x, logp.float(), logpi, la, True, True)
    with pytest.raises(RuntimeError, match="integer"):
        op(x.double(), logp, logpi, la, True, True)
