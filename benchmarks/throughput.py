"""Training and predict throughput: our fused ops, our plain-PyTorch ops, the original deem 0.2.0.

    python benchmarks/throughput.py [--original-python /work/venvs/deem020/bin/python]
        [--device cpu|cuda] [--n 20000 --d 30 --k 5] [--epochs 2] [--threads 1] [--json out.json]

Every implementation fits the same synthetic Dawid–Skene-like label matrix (true class
uniform, each classifier right with probability U(0.6, 0.8) else a uniform wrong class,
10% of entries missing as -1) with ``DEEM(n_classes=K, epochs=E, random_state=0,
device=...)`` and its own defaults otherwise, then predicts the same rows.

- ``ours/extension``: ``deem.ops.set_backend("extension")``, the compiled kernels; each
  of ``--solvers`` (default ``gwg,auto``: the original's algorithm, and our default, which
  runs variational Bayes on hard labels; its "epochs" are iterations to convergence, not ``--epochs``).
- ``ours/reference``: ``deem.ops.set_backend("reference")``, their plain-PyTorch twins.
- ``original``: ``deem==0.2.0`` in another interpreter (``--original-python``), through
  ``benchmarks/_original_runner.py`` run with ``-I`` so this repository cannot shadow it.

Training throughput is rows·epochs per second of ``fit`` (set-up included); predict
throughput is rows per second of the best of ``--predict-repeats`` calls of ``predict``.

With ``--device cuda`` the sizes default to N=1,000,000, D=100, K=10 for our two paths;
the CPU sizes (N=20,000, D=30, K=5) are also run on the GPU for all three, the original
included, and the predict kernel ``torch.ops.deem.hidden_probs`` is timed with CUDA
events on int8 labels at N=10,000,000 (``--bw-n``): bytes moved (labels + parameters
read, probabilities written) / time, as a fraction of the GPU's peak bandwidth (a table
by GPU name, else a device-to-device copy measured as a proxy).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RUNNER = os.path.join(HERE, "_original_runner.py")

CPU_SIZES = (20_000, 30, 5)
CUDA_SIZES = (1_000_000, 100, 10)

# Peak DRAM bandwidth in bytes/s, matched against torch.cuda.get_device_name().
PEAK_BANDWIDTH = [
    (("H200",), 4.8e12),
    (("H100", "PCIE"), 2.0e12),
    (("H100", "SXM"), 3.35e12),
    (("H100", "HBM3"), 3.35e12),  # "NVIDIA H100 80GB HBM3" is the SXM part
]


def synthetic_labels(n: int, d: int, k: int, seed: int = 0, missing: float = 0.1,
                     acc_range=(0.6, 0.8)):
    """Dawid–Skene-like hard labels: returns (X int64 (n, d) with -1 missing, y (n,))."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    acc = rng.uniform(*acc_range, d)
    X = np.empty((n, d), dtype=np.int64)
    step = max(1, (1 << 24) // max(d, 1))  # bound temporaries at large n
    for s in range(0, n, step):
        ys = y[s:s + step, None]
        correct = rng.random((len(ys), d)) < acc
        wrong = (ys + rng.integers(1, k, (len(ys), d))) % k
        block = np.where(correct, ys, wrong)
        block[rng.random((len(ys), d)) < missing] = -1
        X[s:s + step] = block
    return X, y


def smear(X: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Soft labels (n, k, d) float32 from hard ones: the label gets a confidence U(0.4, 0.95), the
    other classes share the rest; a missing label becomes an all-zero column."""
    rng = np.random.default_rng(seed + 1)
    n, d = X.shape
    out = np.empty((n, k, d), dtype=np.float32)
    step = max(1, (1 << 22) // max(k * d, 1))
    for s in range(0, n, step):
        x = X[s:s + step]
        conf = rng.uniform(0.4, 0.95, size=(len(x), 1, d)).astype(np.float32)
        onehot = (np.arange(k)[None, :, None] == x[:, None, :]).astype(np.float32)
        out[s:s + step] = (onehot * conf + (1 - onehot) * (1 - conf) / (k - 1)) * (x >= 0)[:, None, :]
    return out


# ----------------------------------------------------------------------------- ours
def _import_ours():
    try:
        import deem  # noqa: F401
    except ImportError:
        sys.path.insert(0, REPO)
    import deem
    import deem.ops
    from deem import DEEM
    return deem, DEEM


def _sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_ours(backend: str, X: np.ndarray, k: int, epochs: int, device: str,
              predict_repeats: int, solver: str = "auto") -> dict:
    soft = X.ndim == 3
    row = {"impl": f"ours/{backend} solver={solver}" + (" (soft labels)" if soft else ""), "device": device,
           "n": int(X.shape[0]), "d": int(X.shape[-1]), "k": k, "epochs": epochs}
    try:
        deem, DEEM = _import_ours()
        deem.ops.set_backend(backend)
        # Warm-up: library loading, CUDA context, first-call allocations.
        DEEM(n_classes=k, solver=solver, epochs=1, random_state=0, device=device).fit(X[:1024])
        model = DEEM(n_classes=k, solver=solver, epochs=epochs, random_state=0, device=device)
        _sync(device)
        t0 = time.perf_counter()
        model.fit(X)
        _sync(device)
        row["fit_seconds"] = time.perf_counter() - t0
        times = []
        for _ in range(max(1, predict_repeats)):
            _sync(device)
            t0 = time.perf_counter()
            model.predict(X)
            _sync(device)
            times.append(time.perf_counter() - t0)
        row["predict_seconds"] = min(times)
    except Exception as exc:  # one broken path must not hide the others
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


# ------------------------------------------------------------------------- original
def time_original(python: str, X: np.ndarray, k: int, epochs: int, device: str, threads,
                  predict_repeats: int, tmpdir: str) -> dict:
    row = {"impl": "original 0.2.0", "device": device, "n": int(X.shape[0]),
           "d": int(X.shape[1]), "k": k, "epochs": epochs}
    x_path = os.path.join(tmpdir, f"X_{X.shape[0]}_{X.shape[1]}_{k}.npy")
    np.save(x_path, X)
    cfg = {"params": {"n_classes": k, "epochs": epochs, "random_state": 0, "device": device},
           "threads": threads, "predict_repeats": predict_repeats,
           "warmup": device.startswith("cuda")}
    out = os.path.join(tmpdir, "original.json")
    proc = subprocess.run([python, "-I", RUNNER, x_path, json.dumps(cfg), "--out", out],
                          cwd=tmpdir, capture_output=True, text=True)
    try:
        with open(out) as f:
            res = json.load(f)
    except (OSError, ValueError):
        res = {"ok": False, "error": f"runner exited {proc.returncode}: {proc.stderr[-2000:]}"}
    if not res.get("ok"):
        row["error"] = res.get("error", "unknown")
        return row
    row["fit_seconds"] = res["fit_seconds"]
    row["predict_seconds"] = res["predict_seconds"]
    row["epochs"] = res.get("epochs", epochs)
    return row


# ------------------------------------------------------------------------ bandwidth
def peak_bandwidth(name: str):
    upper = name.upper()
    for keys, peak in PEAK_BANDWIDTH:
        if all(key in upper for key in keys):
            return peak
    return None


def copy_bandwidth(nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Device-to-device copy, read + write bytes per second: a proxy for peak bandwidth."""
    import torch
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * nbytes / statistics.median(times)


def predict_bandwidth(n: int, d: int, k: int, h: int = 1, repeats: int = 20) -> dict:
    import torch
    _import_ours()  # registers torch.ops.deem.*
    gen = torch.Generator(device="cuda").manual_seed(0)
    labels = torch.randint(-1, k, (n, d), dtype=torch.int8, device="cuda", generator=gen)
    W = torch.randn(k, k, d, h, device="cuda", generator=gen) * 0.1
    b_h = torch.zeros(h, k, device="cuda")
    probs = torch.ops.deem.hidden_probs(labels, W, b_h)  # warm-up
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        probs = torch.ops.deem.hidden_probs(labels, W, b_h)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    seconds = statistics.median(times)
    nbytes = (labels.numel() * labels.element_size() + W.numel() * W.element_size()
              + b_h.numel() * b_h.element_size() + probs.numel() * probs.element_size())
    name = torch.cuda.get_device_name()
    peak = peak_bandwidth(name)
    copy_bw = copy_bandwidth()
    result = {"gpu": name, "n": n, "d": d, "k": k, "h": h, "bytes": nbytes,
              "seconds_median": seconds, "seconds_min": min(times),
              "bandwidth": nbytes / seconds, "copy_bandwidth": copy_bw,
              "peak": peak if peak else copy_bw,
              "peak_source": "table" if peak else "device-to-device copy"}
    result["fraction_of_peak"] = result["bandwidth"] / result["peak"]
    return result


# ---------------------------------------------------------------------------- report
def _fmt(row: dict) -> str:
    size = f"{row['n']:,}×{row['d']}×{row['k']}"
    if "error" in row:
        return f"| {row['impl']} | {row['device']} | {size} | {row['epochs']} | error: {row['error'][:120]} | | | | |"
    train = row["n"] * row["epochs"] / row["fit_seconds"]
    pred = row["n"] / row["predict_seconds"]
    row["train_rows_epochs_per_s"], row["predict_rows_per_s"] = train, pred
    return (f"| {row['impl']} | {row['device']} | {size} | {row['epochs']} | {row['fit_seconds']:.3f} | "
            f"{train:,.0f} | {row['predict_seconds']:.4f} | {pred:,.0f} | {row.get('speedup', '')} |")


def _add_speedups(rows) -> None:
    by_size = {}
    for r in rows:
        if r["impl"] == "original 0.2.0" and "error" not in r:
            by_size[(r["device"], r["n"], r["d"], r["k"])] = r
    for r in rows:
        ref = by_size.get((r["device"], r["n"], r["d"], r["k"]))
        if ref and r is not ref and "error" not in r:
            r["speedup"] = (f"train ×{ref['fit_seconds'] / r['fit_seconds']:.1f}, "
                            f"predict ×{ref['predict_seconds'] / r['predict_seconds']:.1f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="DEEM throughput: ours (fused / reference) vs the original 0.2.0")
    ap.add_argument("--original-python", help="interpreter of a venv with deem==0.2.0 installed")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--n", type=int, help="rows (default 20,000 on cpu, 1,000,000 on cuda)")
    ap.add_argument("--d", type=int, help="classifiers (default 30 on cpu, 100 on cuda)")
    ap.add_argument("--k", type=int, help="classes (default 5 on cpu, 10 on cuda)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--solvers", default="gwg,auto",
                    help="our solvers to time: gwg is the original's algorithm (sampler-based PCD, "
                         "sampler_steps GWG steps per update); auto, the default, runs variational Bayes (hard labels)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on cpu (0: torch's default)")
    ap.add_argument("--predict-repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    ap.add_argument("--bw-n", type=int, default=10_000_000, help="rows of the cuda bandwidth test")
    ap.add_argument("--skip-ours", action="store_true", help="only the original")
    ap.add_argument("--skip-reference", action="store_true", help="leave out ours/reference")
    ap.add_argument("--skip-bandwidth", action="store_true")
    ap.add_argument("--soft", action="store_true",
                    help="fit soft labels (the synthetic labels smeared into probabilities; the original is not run)")
    ap.add_argument("--json", help="write all results here")
    args = ap.parse_args(argv)

    import torch
    threads = args.threads if args.threads > 0 else None
    if threads:
        torch.set_num_threads(threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device visible to torch")

    default = CUDA_SIZES if args.device == "cuda" else CPU_SIZES
    main_size = (args.n or default[0], args.d or default[1], args.k or default[2])
    sizes = [main_size]
    if args.device == "cuda" and main_size != CPU_SIZES:
        sizes.append(CPU_SIZES)
    backends = [] if args.skip_ours else (["extension"] if args.skip_reference else ["extension", "reference"])

    rows = []
    header = ("| impl | device | N×D×K | epochs | fit s | train rows·epochs/s | predict s | predict rows/s "
              "| vs original |\n"
              "|---|---|---|---|---|---|---|---|---|")
    print(header, flush=True)
    with tempfile.TemporaryDirectory(prefix="deem-throughput-") as tmpdir:
        for n, d, k in sizes:
            X, _ = synthetic_labels(n, d, k, seed=args.seed)
            if args.soft:
                X = smear(X, k, seed=args.seed)
            size_rows = [time_ours(b, X, k, args.epochs, args.device, args.predict_repeats, solver)
                         for b in backends for solver in args.solvers.split(",")]
            # The original is far too slow at the cuda sizes: on cuda it runs at the cpu sizes only.
            if args.original_python and not args.soft and (args.device == "cpu" or (n, d, k) == CPU_SIZES):
                size_rows.append(time_original(args.original_python, X, k, args.epochs, args.device,
                                               threads, args.predict_repeats, tmpdir))
            _add_speedups(size_rows)
            for r in size_rows:
                print(_fmt(r), flush=True)
            rows.extend(size_rows)
            del X

    bandwidth = None
    if args.device == "cuda" and not args.skip_bandwidth and not args.skip_ours:
        try:
            bandwidth = predict_bandwidth(args.bw_n, CUDA_SIZES[1], CUDA_SIZES[2])
            print(f"\npredict kernel hidden_probs on {bandwidth['gpu']}, int8 labels "
                  f"{bandwidth['n']:,}×{bandwidth['d']}, K={bandwidth['k']}: "
                  f"{bandwidth['bytes'] / 1e9:.2f} GB in {bandwidth['seconds_median'] * 1e3:.2f} ms = "
                  f"{bandwidth['bandwidth'] / 1e12:.3f} TB/s = {bandwidth['fraction_of_peak']:.1%} of peak "
                  f"{bandwidth['peak'] / 1e12:.2f} TB/s ({bandwidth['peak_source']}; "
                  f"device copy {bandwidth['copy_bandwidth'] / 1e12:.3f} TB/s)")
        except Exception as exc:
            bandwidth = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"\nbandwidth test failed: {bandwidth['error']}")

    if args.json:
        meta = {"python": sys.version.split()[0], "torch": torch.__version__,
                "platform": platform.platform(), "processor": platform.processor(),
                "threads": torch.get_num_threads(), "args": vars(args)}
        if args.device == "cuda":
            meta["gpu"] = torch.cuda.get_device_name()
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows, "bandwidth": bandwidth}, f, indent=2)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
