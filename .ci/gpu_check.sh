#!/usr/bin/env bash
# Everything that needs a GPU, in one go (for a machine with an NVIDIA GPU, torch
# with CUDA and nvcc; run from the repository root): build with the CUDA kernels,
# run the whole test suite (the cuda-parametrized tests then run instead of
# skipping), the op tests under compute-sanitizer memcheck, and the CUDA benchmarks
# (throughput; GWG vs DLP mixing and time per step; the samplers on crowds stored sparse, dense vs
# sparse layout; sparse crowds at 5 M and 50 M labels, ours only:
# the peers' venv and ../shared do not travel to the GPU machine).
# Results go to ${OUT:-./gpu-check}.
#
#   bash .ci/gpu_check.sh             everything above, in one call of under 10 minutes
#   bash .ci/gpu_check.sh scale-500M  the build and issue 13's 500 M-label crowd on the GPU, alone: building
#                                     that crowd as a long-format frame and coding it (fit_long, then
#                                     predict_long) takes minutes on the host, more than the first call leaves
set -euo pipefail
MODE="${1:-all}"
case "$MODE" in all|scale-500M) ;; *) echo "usage: $0 [all|scale-500M]" >&2; exit 2 ;; esac
OUT="${OUT:-./gpu-check}"
mkdir -p "$OUT"
python -c "import torch; assert torch.cuda.is_available(), 'no GPU'; print(torch.cuda.get_device_name())"
DEEM_CUDA=1 MAX_JOBS="${MAX_JOBS:-16}" python -m pip install --no-build-isolation --no-deps -e . 2>&1 | tail -n 3
if [ "$MODE" = scale-500M ]; then
  timeout 540 python benchmarks/scale.py --device cuda --labels 500M --real "" --methods ours \
    --json "$OUT/scale-cuda-500M.json" 2>&1 | tee "$OUT/scale-500M.log" || echo "500 M benchmark stopped (timeout or error)"
  exit 0
fi
python -m pytest -q -rs 2>&1 | tee "$OUT/pytest.log" | tail -n 15
compute-sanitizer --tool memcheck --error-exitcode 1 python -m pytest -q -x tests/test_ops.py tests/test_hard_evidence.py tests/test_csr_evidence.py tests/test_ell_ops.py tests/test_vb_update.py -k cuda \
  2>&1 | tee "$OUT/memcheck.log" | tail -n 5
python benchmarks/throughput.py --device cuda --skip-reference --json "$OUT/throughput-cuda.json" 2>&1 | tee "$OUT/throughput.log"
python benchmarks/samplers.py --device cuda --chains 100000 --json "$OUT/samplers-cuda.json" 2>&1 | tee "$OUT/samplers.log"
timeout 120 python benchmarks/sparse_samplers.py --device cuda --tasks 20000,100000 --epochs 1 --json "$OUT/sparse-samplers-cuda.json" 2>&1 | tee "$OUT/sparse-samplers.log" || echo "sparse samplers benchmark stopped (timeout or error)"
timeout 300 python benchmarks/scale.py --device cuda --labels 5M,50M --real "" --methods ours --json "$OUT/scale-cuda.json" 2>&1 | tee "$OUT/scale.log" || echo "scale benchmark stopped (timeout or error)"
# distributed=True through NCCL (one rank: the collectives run, on the GPU's tensors) against a local fit
python - <<'PY' 2>&1 | tee "$OUT/nccl.log"
import os, numpy as np, torch, torch.distributed as dist
from deem import DEEM
from deem.datasets import dawid_skene
os.environ.setdefault("MASTER_ADDR", "127.0.0.1"); os.environ.setdefault("MASTER_PORT", "29511")
dist.init_process_group("nccl", rank=0, world_size=1)
X, _ = dawid_skene(n_samples=20000, n_classifiers=30, n_classes=4, missing_rate=0.7, random_state=0)
for solver in ("bayes", "exact"):
    a = DEEM(solver=solver, device="cuda", distributed=True, random_state=0).fit(X).predict_proba(X)
    b = DEEM(solver=solver, device="cuda", random_state=0).fit(X).predict_proba(X)
    print(f"nccl {solver}: max |distributed - local| = {np.abs(a - b).max():.2e}")
    assert np.abs(a - b).max() < 1e-9
dist.destroy_process_group()
PY
