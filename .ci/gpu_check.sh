#!/usr/bin/env bash
# Everything that needs a GPU, in one go (for a machine with an NVIDIA GPU, torch
# with CUDA and nvcc; run from the repository root): build with the CUDA kernels,
# run the whole test suite (the cuda-parametrized tests then run instead of
# skipping), the op tests under compute-sanitizer memcheck, and the CUDA benchmarks
# (throughput; GWG vs DLP mixing and time per step; sparse crowds at 5 M and 50 M labels, ours only:
# the peers' venv and ../shared do not travel to the GPU machine).
# Results go to ${OUT:-./gpu-check}.
set -euo pipefail
OUT="${OUT:-./gpu-check}"
mkdir -p "$OUT"
python -c "import torch; assert torch.cuda.is_available(), 'no GPU'; print(torch.cuda.get_device_name())"
DEEM_CUDA=1 MAX_JOBS="${MAX_JOBS:-16}" python -m pip install --no-build-isolation --no-deps -e . 2>&1 | tail -n 3
python -m pytest -q -rs 2>&1 | tee "$OUT/pytest.log" | tail -n 15
compute-sanitizer --tool memcheck --error-exitcode 1 python -m pytest -q -x tests/test_ops.py tests/test_hard_evidence.py tests/test_csr_evidence.py -k cuda \
  2>&1 | tee "$OUT/memcheck.log" | tail -n 5
python benchmarks/throughput.py --device cuda --skip-reference --json "$OUT/throughput-cuda.json" 2>&1 | tee "$OUT/throughput.log"
python benchmarks/samplers.py --device cuda --chains 100000 --json "$OUT/samplers-cuda.json" 2>&1 | tee "$OUT/samplers.log"
timeout 300 python benchmarks/scale.py --device cuda --labels 5M,50M --real "" --methods ours --json "$OUT/scale-cuda.json" 2>&1 | tee "$OUT/scale.log" || echo "scale benchmark stopped (timeout or error)"
