"""The solvers' house: one interface, a registry by name, no solver-specific branch in the estimator."""
import ast
import pathlib

import numpy as np
import pytest
import torch

import deem
from deem import DEEM, solvers
from deem.datasets import dawid_skene
from deem.rbm import RBM

PACKAGE = pathlib.Path(deem.__file__).parent


def test_registry_holds_every_solver_and_names_them_in_its_error():
    assert set(solvers.SOLVERS) == {"bayes", "exact", "gwg", "dlp"}
    assert all(s.name == name for name, s in solvers.SOLVERS.items())
    with pytest.raises(ValueError, match="solver must be one of .*'bayes'.*'dlp'"):
        solvers.get_solver("em")
    with pytest.raises(ValueError, match="solver must be one of"):
        DEEM(solver="em").fit(np.zeros((4, 3), dtype=int))


class MajorityVoteSolver(solvers.Solver):
    """A solver written outside the package: the majority vote as a one-unit RBM."""

    name = "majority-test"
    one_unit = True

    def fit(self, data, all_rows, settings):
        rbm = RBM(data.n_classifiers, data.n_classes, 1, device=settings.device, dtype=torch.float64)
        logp = torch.full((data.n_classes, data.n_classes, data.n_classifiers), -3.0, dtype=torch.float64)
        logp[range(data.n_classes), range(data.n_classes)] = 0.0
        rbm.set_one_unit(logp, torch.zeros(data.n_classes, dtype=torch.float64))
        return solvers.SolverResult(rbm, [0.0], attributes={"missing_": "ignorable"})


def test_a_registered_solver_is_used_by_name_with_no_change_to_the_estimator(monkeypatch):
    monkeypatch.setitem(solvers.SOLVERS, "majority-test", MajorityVoteSolver())
    X, _ = dawid_skene(n_samples=300, n_classifiers=7, n_classes=3, missing_rate=0.3, random_state=0)
    model = DEEM(solver="majority-test").fit(X)
    assert model.solver_ == "majority-test" and model.history_ == {"loss": [0.0]}
    counts = np.stack([(X == c).sum(1) for c in range(3)], 1)
    clear = np.sort(counts, 1)[:, -1] > np.sort(counts, 1)[:, -2]  # rows without a tie
    np.testing.assert_array_equal(model.predict(X)[clear], counts.argmax(1)[clear])


class BlasWatchingSolver(MajorityVoteSolver):
    """Records the BLAS pools' thread counts while it fits."""

    name = "blas-watch-test"
    seen: list = []

    def fit(self, data, all_rows, settings):
        from threadpoolctl import threadpool_info

        self.seen.extend(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
        return super().fit(data, all_rows, settings)


def test_a_fit_holds_blas_to_one_thread_and_gives_the_threads_back(monkeypatch):
    """Spinning BLAS threads after scipy's tiny solves stole the kernels' cores (deem/_threads.py)."""
    from threadpoolctl import threadpool_info

    before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    if not before:
        pytest.skip("no BLAS pool loaded")
    solver = BlasWatchingSolver()
    monkeypatch.setitem(solvers.SOLVERS, solver.name, solver)
    X, _ = dawid_skene(n_samples=50, n_classifiers=5, n_classes=2, random_state=0)
    DEEM(solver=solver.name).fit(X)
    assert solver.seen and set(solver.seen) == {1}
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == before


def _imports(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_model_imports_no_solver():
    assert not any("solvers" in name for name in _imports(PACKAGE / "rbm.py"))


def test_the_estimator_names_no_solver():
    source = (PACKAGE / "estimator.py").read_text()
    for name in solvers.SOLVERS:
        assert f'"{name}"' not in source and f"'{name}'" not in source, name
