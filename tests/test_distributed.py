"""DEEM(distributed=True): each rank fits its share of the items and every rank ends with the single-process model.

The processes are spawned by the tests themselves (gloo on localhost, a file rendezvous), bounded in time.
Each spawn runs every scenario of one world size in one process group, and writes what each rank fitted;
the test process compares it with single-process fits on the union of the shards.
"""
import os
import pickle
import time
import traceback

import numpy as np
import pandas as pd
import pytest
import torch

from deem import DEEM
from deem.datasets import dawid_skene, labeling_functions
from deem.sparse import SparseLabels

TIMEOUT = 240  # seconds for one spawn, every scenario included


def crowd():
    X, _ = dawid_skene(n_samples=900, n_classifiers=12, n_classes=3, accuracy=(0.5, 0.9), missing_rate=0.6,
                       random_state=7)
    return X


def few_labels():
    """A crowd whose first 55% of rows keep two labels at most: over half the rows overall, all of rank 0's
    shard and a third of rank 1's, so only the all-reduced share anchors every rank alike."""
    X = crowd().copy()
    for row in range(495):
        present = np.flatnonzero(X[row] >= 0)
        X[row, present[2:]] = -1
    return X


def ensemble():
    L, _ = labeling_functions(n_samples=800, n_voters=10, n_classes=2, random_state=3)
    return L


def soft():
    """Soft labels: each present label blurred with a Dirichlet draw; missing columns all zero."""
    X = crowd()
    rng = np.random.default_rng(2)
    V = np.zeros((X.shape[0], 3, X.shape[1]))
    rows, cols = np.nonzero(X >= 0)
    V[rows, X[rows, cols], cols] = 2.0
    V[rows, :, cols] += rng.dirichlet(np.ones(3), size=len(rows))
    return V / np.maximum(V.sum(axis=1, keepdims=True), 1e-12)


def long_frame():
    """A long frame whose last worker labels only the last tasks (seen by the last rank only)."""
    X = crowd()
    rows, cols = np.nonzero(X >= 0)
    df = pd.DataFrame({"task": rows, "worker": [f"w{c}" for c in cols], "label": X[rows, cols]})
    extra = pd.DataFrame({"task": np.arange(880, 900), "worker": "late", "label": X[880:900].max(axis=1).clip(0)})
    return pd.concat([df, extra], ignore_index=True)


def shards(n, world):
    """Uneven contiguous shards: rank r holds (r + 1) parts of 1 + 2 + ... + world."""
    weights = np.arange(1, world + 1)
    cuts = np.concatenate([[0], np.cumsum(weights) * n // weights.sum()])
    return [slice(int(cuts[r]), int(cuts[r + 1])) for r in range(world)]


SCENARIOS = {
    # name: (estimator kwargs, how the data is given)
    "bayes-dense": ({"solver": "bayes"}, "dense"),
    "exact-dense": ({"solver": "exact"}, "dense"),
    "bayes-sparse": ({"solver": "bayes", "layout": "sparse"}, "sparse"),
    "exact-informative": ({"solver": "exact", "missing": "informative", "anchor": "none"}, "ensemble"),
    "auto-ensemble": ({}, "ensemble"),
    "long": ({}, "long"),
    "soft": ({"solver": "exact"}, "soft"),
    "gwg": ({"solver": "gwg", "epochs": 3, "batch_size": 64}, "dense"),
    "dlp": ({"solver": "dlp", "epochs": 3, "batch_size": 64, "hidden_dim": 2}, "dense"),
    "gwg-sparse": ({"solver": "gwg", "epochs": 3, "batch_size": 64}, "sparse"),
    "gwg-soft": ({"solver": "gwg", "epochs": 3, "batch_size": 64}, "soft"),
    "soft-informative": ({"solver": "exact", "missing": "informative", "anchor": "none"}, "soft"),
    "few-labels": ({"solver": "bayes", "missing": "ignorable"}, "few"),
}


# The samplers draw their own chains on each rank: their fit is the same on every rank and reproducible,
# not equal to a single process's (whose chains are others).
SAMPLED = ("gwg", "dlp", "gwg-sparse", "gwg-soft")


def fit_shard(rank, world, kwargs, kind, distributed=True):
    part = shards(900 if kind != "ensemble" else 800, world)[rank]
    model = DEEM(random_state=0, distributed=distributed, **kwargs)
    if kind == "long":
        df = long_frame()
        return model.fit_long(df[(df.task >= part.start) & (df.task < part.stop)])
    data = {"ensemble": ensemble, "soft": soft, "few": few_labels}.get(kind, crowd)()
    shard = data[part]
    if kind == "sparse":
        shard = SparseLabels.from_dense(shard, n_classes=3)
    return model.fit(shard)


def summary(model, kind):
    if kind == "long":
        df = long_frame()
        proba = model.predict_proba_long(df).sort_index().to_numpy()
        extra = {"workers": list(model.workers_)}
    else:
        proba = model.predict_proba({"ensemble": ensemble, "soft": soft, "few": few_labels}.get(kind, crowd)())
        extra = {}
    return {"proba": proba, "W": model.model_.W.detach().double().cpu().numpy(), "class_map": model.class_map_,
            "missing": model.missing_, "dropped": model.n_dropped_rows_, "coverage": model.coverage_,
            "anchor": model.anchor_,
            "history": np.asarray(model.history_["loss"]), **extra}


def _rank_main(rank, world, init_file, out_dir, scenarios):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results = {}
    try:
        for name in scenarios:
            kwargs, kind = SCENARIOS[name]
            results[name] = summary(fit_shard(rank, world, kwargs, kind), kind)
            if name in SAMPLED:  # reproducible: the same fit again gives the same bits
                results[name + "-again"] = summary(fit_shard(rank, world, kwargs, kind), kind)
        # errors: every rank gets the same ValueError instead of a hang
        for name, make in (("settings", lambda: DEEM(distributed=True, prior_strength=2.0 + rank).fit(crowd())),
                           ("empty", lambda: DEEM(distributed=True).fit(crowd()[:0 if rank == world - 1 else 50])),
                           ("voters", lambda: DEEM(distributed=True).fit(crowd()[:, :12 - rank])),
                           ("soft-classes", lambda: DEEM(distributed=True).fit(
                               np.concatenate([soft(), np.zeros((900, rank, 12))], axis=1))),
                           ("overrides", lambda: DEEM(distributed=True, solver="gwg").fit(crowd(), epochs=1 + rank)),
                           ("preprocessing", lambda: DEEM(distributed=True, solver="gwg", epochs=1,
                                                          use_preprocessing=True).fit(crowd()))):
            try:
                make()
                results["error-" + name] = None
            except ValueError as e:
                results["error-" + name] = str(e)
        # save writes once; every rank can load it after
        model = fit_shard(rank, world, {"solver": "bayes"}, "dense")
        path = os.path.join(out_dir, "model.deem")
        model.save(path)
        results["loaded"] = DEEM().load(path).predict_proba(crowd())
    except Exception:  # reported to the test process, which fails with it
        results["crash"] = traceback.format_exc()
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(results, f)


def run_world(world, tmp_path, scenarios):
    import torch.multiprocessing as mp

    init_file = tmp_path / "rendezvous"
    ctx = mp.start_processes(_rank_main, args=(world, str(init_file), str(tmp_path), scenarios), nprocs=world,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {world}-process fit did not finish in {TIMEOUT} s")
    out = []
    for rank in range(world):
        with open(tmp_path / f"rank{rank}.pkl", "rb") as f:
            res = pickle.load(f)
        assert "crash" not in res, res.get("crash")
        out.append(res)
    return out


def single(name):
    kwargs, kind = SCENARIOS[name]
    if kind == "long":
        model = DEEM(random_state=0, **kwargs).fit_long(long_frame())
    else:
        data = {"ensemble": ensemble, "soft": soft, "few": few_labels}.get(kind, crowd)()
        if kind == "sparse":
            data = SparseLabels.from_dense(data, n_classes=3)
        model = DEEM(random_state=0, **kwargs).fit(data)
    return summary(model, kind)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return run_world(2, tmp_path_factory.mktemp("two"), list(SCENARIOS))


@pytest.fixture(scope="module")
def three_ranks(tmp_path_factory):
    return run_world(3, tmp_path_factory.mktemp("three"), ["bayes-dense", "long"])


def check_equal(ranks, name):
    want = single(name)
    for rank, res in enumerate(ranks):
        got = res[name]
        np.testing.assert_allclose(got["proba"], want["proba"], rtol=0, atol=1e-9, err_msg=f"{name} rank {rank}")
        np.testing.assert_allclose(got["W"], want["W"], rtol=0, atol=1e-9, err_msg=f"{name} rank {rank}")
        np.testing.assert_allclose(got["coverage"], want["coverage"], rtol=0, atol=1e-12)
        assert np.array_equal(got["class_map"], want["class_map"])
        assert got["missing"] == want["missing"] and got["dropped"] == want["dropped"]
        assert got["anchor"] == want["anchor"]
        assert len(got["history"]) == len(want["history"])  # the same iterations, the same stop
        if "workers" in want:
            assert got["workers"] == want["workers"]
    for res in ranks[1:]:  # and the ranks among themselves: the same bits
        assert np.array_equal(res[name]["W"], ranks[0][name]["W"])


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n not in SAMPLED])
def test_two_ranks_fit_the_single_process_model(two_ranks, name):
    check_equal(two_ranks, name)


@pytest.mark.parametrize("name", SAMPLED)
def test_sampler_ranks_agree_reproducibly_and_fit_as_well_as_one_process(two_ranks, name):
    """gwg/dlp all-reduce their gradient every update: every rank keeps the same model (bit for bit), a rerun
    gives it again, and it predicts about as well as a single process's fit of the union."""
    first = two_ranks[0][name]
    for res in two_ranks:
        assert np.array_equal(res[name]["W"], first["W"]) and np.array_equal(res[name + "-again"]["W"], first["W"])
        assert len(res[name]["history"]) == SCENARIOS[name][0]["epochs"]
    want = single(name)
    truth = dawid_skene(n_samples=900, n_classifiers=12, n_classes=3, accuracy=(0.5, 0.9), missing_rate=0.6,
                        random_state=7)[1]
    accuracy = lambda proba: float((proba.argmax(axis=1) == truth).mean())
    assert accuracy(first["proba"]) > accuracy(want["proba"]) - 0.03
    assert not np.array_equal(first["W"], want["W"])  # its own chains: not the single process's draws


def test_sampler_fit_of_sparse_shards_is_the_dense_shards_fit(two_ranks):
    """The samplers read sparse labels densified: the same fit, bit for bit, as from the dense shards."""
    for res in two_ranks:
        assert np.array_equal(res["gwg-sparse"]["W"], res["gwg"]["W"])


@pytest.mark.parametrize("name", ["bayes-dense", "long"])
def test_three_ranks_fit_the_single_process_model(three_ranks, name):
    check_equal(three_ranks, name)


def test_a_voter_seen_on_one_rank_gets_one_column_everywhere(two_ranks):
    for res in two_ranks:
        assert "late" in res["long"]["workers"]


@pytest.mark.parametrize("what,match", [("settings", "disagree on the estimator's settings"),
                                        ("empty", r"checking the labels failed on rank\(s\) \[1\]: ValueError: predictions is empty"),
                                        ("voters", "disagree on the number of voters"),
                                        ("soft-classes", "disagree on the number of classes"),
                                        ("overrides", "disagree on fit's epochs"),
                                        ("preprocessing", "preprocessing layers is not supported yet")])
def test_a_mismatch_is_the_same_error_on_every_rank(two_ranks, what, match):
    messages = [res["error-" + what] for res in two_ranks]
    assert all(m is not None for m in messages), messages
    import re
    assert all(re.search(match, m) for m in messages), messages


def test_save_writes_once_and_loads_anywhere(two_ranks):
    np.testing.assert_allclose(two_ranks[0]["loaded"], two_ranks[1]["loaded"], rtol=0, atol=0)


def test_distributed_needs_an_initialized_group():
    with pytest.raises(ValueError, match="initialized torch.distributed process group"):
        DEEM(distributed=True).fit(crowd())
    with pytest.raises(ValueError, match="distributed must be"):
        DEEM(distributed="yes").fit(crowd())
