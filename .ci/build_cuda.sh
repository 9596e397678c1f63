#!/usr/bin/env bash
# Builds the CUDA wheel of DEEM (deem._C with csrc/cuda/*.cu for sm_90) on a
# machine without a GPU, and checks that the wheel holds deem/_C*.so with sm_90
# cubins. Exits non-zero on any failure.
#
#   DEEM_CUDA_VENV   venv to create or reuse   (default: ~/.cache/deem-cuda-venv)
#   DEEM_WHEEL_DIR   where the wheel goes      (default: <repo>/build/cuda-wheel)
#   PYTHON           interpreter for the venv  (default: python3.11, else python3)
#   CUDA_HOME        CUDA 13.0 toolkit         (default: /usr/local/cuda-13.0, else from `which nvcc`)
#   MAX_JOBS         parallel compile jobs     (default: 2)
set -euo pipefail

TORCH_VERSION=2.14.1
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DEEM_CUDA_VENV:-$HOME/.cache/deem-cuda-venv}"
WHEEL_DIR="${DEEM_WHEEL_DIR:-$REPO/build/cuda-wheel}"
T0=$SECONDS
stamp() { echo "[build_cuda +$((SECONDS - T0))s] $*"; }
die() { echo "[build_cuda] ERROR: $*" >&2; exit 1; }

# ---- venv (reused when it already has torch $TORCH_VERSION) ----
PY="$VENV/bin/python"
if [[ -x "$PY" ]] && [[ "$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)" == "$TORCH_VERSION" ]]; then
  stamp "reusing venv $VENV (torch $TORCH_VERSION)"
else
  BASE_PY="${PYTHON:-}"
  if [[ -z "$BASE_PY" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then BASE_PY=python3.11; else BASE_PY=python3; fi
  fi
  stamp "creating venv $VENV with $("$BASE_PY" --version 2>&1)"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$BASE_PY" -m venv "$VENV"
fi
stamp "installing build requirements"
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet "torch==$TORCH_VERSION" numpy ninja pybind11 setuptools wheel
"$PY" -c "import torch; assert torch.version.cuda, 'torch has no CUDA'; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
stamp "venv ready"

# ---- toolkit ----
if [[ -z "${CUDA_HOME:-}" ]]; then
  if [[ -x /usr/local/cuda-13.0/bin/nvcc ]]; then
    CUDA_HOME=/usr/local/cuda-13.0
  elif command -v nvcc >/dev/null 2>&1; then
    CUDA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
  else
    die "no CUDA toolkit: set CUDA_HOME or put nvcc on PATH"
  fi
fi
[[ -x "$CUDA_HOME/bin/nvcc" ]] || die "$CUDA_HOME/bin/nvcc not found"
export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
"$CUDA_HOME/bin/nvcc" --version | tail -n 2
# The minimal toolkit lacks the cuBLAS/cuSPARSE/... headers torch includes; the
# venv's nvidia/cu13 wheels carry them.
CU13_INC="$("$PY" - <<'PY'
import os, sys
import nvidia
for p in nvidia.__path__:
    inc = os.path.join(p, "cu13", "include")
    if os.path.isdir(inc):
        print(inc)
        sys.exit(0)
sys.exit("nvidia/cu13/include not found in the venv")
PY
)"
export CPATH="$CU13_INC${CPATH:+:$CPATH}"
stamp "CUDA_HOME=$CUDA_HOME CPATH=$CPATH"

# ---- wheel ----
rm -rf "$WHEEL_DIR"
mkdir -p "$WHEEL_DIR"
LOG="$WHEEL_DIR/build.log"
stamp "building the wheel (log: $LOG)"
if ! (cd "$REPO" && DEEM_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS="${MAX_JOBS:-2}" \
      "$PY" -m pip wheel --no-build-isolation --no-deps -v -w "$WHEEL_DIR" . >"$LOG" 2>&1); then
  tail -n 60 "$LOG" >&2
  die "wheel build failed (full log: $LOG)"
fi
WHEEL="$(ls "$WHEEL_DIR"/deem-*.whl 2>/dev/null | head -n 1)"
[[ -n "$WHEEL" ]] || die "no wheel in $WHEEL_DIR"
stamp "built $(basename "$WHEEL") ($(du -h "$WHEEL" | cut -f1))"
n_warn="$(grep -c -i 'warning' "$LOG" || true)"
stamp "build log: $n_warn line(s) mentioning 'warning'"

# ---- checks: deem/_C*.so in the wheel, with sm_90 cubins ----
CHECK_DIR="$(mktemp -d)"
trap 'rm -rf "$CHECK_DIR"' EXIT
"$PY" - "$WHEEL" "$CHECK_DIR" <<'PY'
import struct, sys, zipfile

wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    sos = [n for n in z.namelist() if n.startswith("deem/_C") and n.endswith(".so")]
    if len(sos) != 1:
        sys.exit(f"expected one deem/_C*.so in the wheel, found {sos}")
    z.extract(sos[0], out)
so = f"{out}/{sos[0]}"
data = open(so, "rb").read()

# ELF64 section headers -> .nv_fatbin
if data[:4] != b"\x7fELF" or data[4] != 2:
    sys.exit("deem/_C.so is not an ELF64 file")
shoff, = struct.unpack_from("<Q", data, 0x28)
shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
secs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + k * shentsize) for k in range(shnum)]
strtab = secs[shstrndx]
name = lambda s: data[strtab[4] + s[0]: data.index(b"\0", strtab[4] + s[0])].decode()
fat = [s for s in secs if name(s) == ".nv_fatbin"]
if not fat:
    sys.exit("no .nv_fatbin section: the .so holds no device code (was it built without CUDA?)")
blob = data[fat[0][4]: fat[0][4] + fat[0][5]]

# Fatbin containers: header (magic 0xBA55ED50, version, header size, payload size),
# then entries (kind 1 = PTX, 2 = ELF cubin; arch = SM number).
cubins, ptx, pos = {}, {}, 0
while pos + 16 <= len(blob):
    magic, ver, hsize, fsize = struct.unpack_from("<IHHQ", blob, pos)
    if magic != 0xBA55ED50:
        pos += 8  # containers are 8-byte aligned; skip padding
        continue
    p, end = pos + hsize, pos + hsize + fsize
    while p + 32 <= end:
        kind, _, ehsize, esize = struct.unpack_from("<HHIQ", blob, p)
        arch, = struct.unpack_from("<I", blob, p + 28)
        d = cubins if kind == 2 else ptx
        d[arch] = d.get(arch, 0) + 1
        if ehsize == 0:
            break
        p += ehsize + esize
    pos = end
print(f"{sos[0]}: {len(data) / 1e6:.1f} MB; cubins per SM: {cubins}; ptx per SM: {ptx}")
if not cubins.get(90):
    sys.exit("no sm_90 cubin in deem/_C.so")
print(so)
PY
SO="$(find "$CHECK_DIR" -name '_C*.so' | head -n 1)"
# The module entry point, and host-side kernel launches linked against the CUDA runtime.
# (nm output captured first: `nm | grep -q` trips pipefail with SIGPIPE.)
SYMS="$(nm -D "$SO")"
grep -q ' T PyInit__C' <<<"$SYMS" || die "PyInit__C missing from $SO"
grep -Eq ' U (cudaLaunchKernel|__cudaRegisterFatBinary)' <<<"$SYMS" || die "$SO registers no CUDA device code"
# Load the library (no GPU needed) and check every op has a CUDA and a CPU kernel:
# this catches C++ signature mismatches between csrc/cpu and csrc/cuda at load time.
"$PY" - "$SO" <<'PY'
import sys, torch
torch.ops.load_library(sys.argv[1])
ops = ["hidden_logits", "hidden_probs", "hidden_logits_soft", "hidden_probs_soft", "energy", "free_energy",
       "free_energy_soft", "free_energy_backward", "free_energy_soft_backward", "cd_grad", "cd_grad_soft",
       "gwg_steps", "dlp_steps", "log_partition", "hard_evidence_pass", "csr_evidence_pass",
       "ell_hidden_probs", "ell_free_energy", "ell_cd_grad", "ell_gwg_steps", "ell_dlp_steps"]
missing = [f"{o}/{k}" for o in ops for k in ("CPU", "CUDA")
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f"deem::{o}", k)]
if missing:
    sys.exit(f"ops without a kernel: {missing}")
print(f"loaded {sys.argv[1].rsplit('/', 1)[-1]}: {len(ops)} ops with CPU and CUDA kernels")
PY
# cuobjdump: on PATH, in the toolkit, or the copy triton (a torch dependency) ships.
CUOBJDUMP="$(command -v cuobjdump || true)"
[[ -z "$CUOBJDUMP" && -x "$CUDA_HOME/bin/cuobjdump" ]] && CUOBJDUMP="$CUDA_HOME/bin/cuobjdump"
if [[ -z "$CUOBJDUMP" ]]; then
  CUOBJDUMP="$("$PY" -c 'import os, triton; p = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"); print(p if os.access(p, os.X_OK) else "")' 2>/dev/null || true)"
fi
if [[ -n "$CUOBJDUMP" ]]; then
  ELFS="$("$CUOBJDUMP" --list-elf "$SO")"
  n_sm90="$(grep -c 'sm_90' <<<"$ELFS" || true)"
  [[ "$n_sm90" -gt 0 ]] || die "cuobjdump lists no sm_90 ELF in $SO"
  stamp "cuobjdump ($CUOBJDUMP): $n_sm90 sm_90 cubin(s): $(tr '\n' ' ' <<<"$ELFS")"
else
  stamp "cuobjdump not available; relied on the fatbin header parse above"
fi
stamp "OK: $WHEEL (total $((SECONDS - T0))s)"
