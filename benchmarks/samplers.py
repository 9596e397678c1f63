"""GWG vs DLP: how fast each sampler forgets its start, per step and per second.

For a few dense synthetic ensembles (every classifier labels every row), an RBM
with one hidden unit is fitted exactly (``solver='exact'``); exact samples of it
are drawn (hidden state from its marginal, then each classifier's label given
it), and each sampler runs from them. Since the chains start in equilibrium,
the correlation between f(x) = -F(x) at the start and after k steps is the
lag-k autocorrelation: the lower, the better the sampler mixes. Reported per
step and with the time per step (one kernel call for all chains), plus the
step size DLP's adaptation (``deem.solvers.samplers``) settles on.

    python benchmarks/samplers.py [--chains 4000] [--device cpu|cuda] [--json out.json]

The fit runs on the CPU; the chains and the timed sampler calls on ``--device``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deem import DEEM, ops, samplers  # noqa: E402
from deem._validation import check_labels  # noqa: E402

ENSEMBLES = [  # (classifiers, classes, each classifier's accuracy)
    (10, 3, 0.6),
    (40, 5, 0.4),
    (100, 2, 0.55),
]
DLP_STEPS = (0.3, 0.5, 0.7, 1.0, 2.0)
LAGS = (1, 4, 16, 64)


def fitted(D: int, K: int, accuracy: float, seed: int = 0):
    r = np.random.default_rng(seed)
    y = r.integers(0, K, 2000)
    X = np.where(r.random((2000, D)) < accuracy, y[:, None], r.integers(0, K, (2000, D)))
    model = DEEM(solver="exact", random_state=seed, device="cpu").fit(X)
    return model.model_


def exact_samples(rbm, n: int, seed: int) -> torch.Tensor:
    W, b_v, b_h = (t.detach() for t in (rbm.W, rbm.b_v, rbm.b_h))
    g = torch.Generator().manual_seed(seed)
    log_ph = b_h[0] + torch.logsumexp(b_v.t()[:, None, :] + W[..., 0], 0).sum(-1)
    h = torch.multinomial(torch.softmax(log_ph, 0), n, replacement=True, generator=g)
    probs = torch.softmax(b_v[None] + W[..., 0].permute(1, 2, 0)[h], -1)  # (n, D, K)
    return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=g).reshape(probs.shape[:2])


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_sampler(rbm, x0, kind: str, step_size: float | None, device: str = "cpu"):
    W, b_v, b_h = (t.detach().to(device) for t in (rbm.W, rbm.b_v, rbm.b_h))
    x0 = x0.to(device)
    f0 = -ops.free_energy(x0, W, b_v, b_h)
    x = x0.clone()
    done, accepted, elapsed, out = 0, 0, 0.0, {}
    for lag in LAGS:
        n = lag - done
        _sync(device)
        t = time.perf_counter()
        if kind == "gwg":
            acc = ops.gwg_steps(x, W, b_v, b_h, n_steps=n, seed=1, offset=done)
        else:
            acc = ops.dlp_steps(x, W, b_v, b_h, step_size=step_size, n_steps=n, seed=1, offset=done)
        _sync(device)
        elapsed += time.perf_counter() - t
        accepted += int(acc.sum())
        done = lag
        out[f"lag{lag}"] = correlation(f0, -ops.free_energy(x, W, b_v, b_h))
    out["acceptance"] = accepted / (done * x.shape[0])
    out["ms_per_step"] = 1000 * elapsed / done
    return out


def adapted_step(rbm, x0) -> tuple:
    """The step size and acceptance the training loop's adaptation reaches from these chains (40 updates x 5 steps)."""
    batch = check_labels(x0.numpy())
    chains = samplers.PersistentChains(batch, torch.Generator().manual_seed(0), seed=7, kind="dlp")
    for _ in range(40):
        chains.step(rbm, 5)
    return chains.step_size, chains.acceptance_rate()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chains", type=int, default=4000)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    rows = []
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device visible to torch")
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, {args.chains} chains", flush=True)
    print("| classifiers × classes | sampler | " + " | ".join(f"r(lag {k})" for k in LAGS)
          + " | acceptance | ms / step |")
    print("|---|---|" + "---|" * (len(LAGS) + 2))
    for D, K, acc in ENSEMBLES:
        rbm = fitted(D, K, acc)
        x0 = exact_samples(rbm, args.chains, seed=1)
        step, rate = adapted_step(rbm, x0)
        kinds = [("gwg", None)] + [("dlp", s) for s in DLP_STEPS] + [("dlp", step)]
        for kind, s in kinds:
            res = run_sampler(rbm, x0, kind, s, args.device)
            name = kind if s is None else f"dlp, step {s:.3g}" + (" (adapted)" if s == step else "")
            rows.append(dict(D=D, K=K, accuracy=acc, sampler=name, **res))
            print(f"| {D} × {K} | {name} | " + " | ".join(f"{res[f'lag{k}']:.2f}" for k in LAGS)
                  + f" | {res['acceptance']:.2f} | {res['ms_per_step']:.2f} |", flush=True)
        rows.append(dict(D=D, K=K, accuracy=acc, adapted_step=step, adapted_acceptance=rate))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"chains": args.chains, "torch": torch.__version__, "device": where,
                       "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
