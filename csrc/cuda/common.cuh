// Shared pieces of the CUDA kernels: device checks (shapes: common/checks.h), the
// transposed copies of W (made with torch ops on the current stream, tiny),
// shared-memory planning, bounds-check flags and small warp/block helpers.
//
// Numerics mirror csrc/cpu/common.h where it matters for agreement with the CPU
// kernels: hidden logits accumulate in the parameter dtype starting from b_h,
// the softmax keeps P in the parameter dtype with its normaliser and the
// log-sum-exp in double, free energies / statistics accumulate in double.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/checks.h"
#include "common/philox.h"

namespace deem {
namespace cuda {

using deem::Dims;
using deem::is_label_dtype;

inline void check_cuda(const char* name, const char* what, const at::Tensor& t, const at::Tensor& W) {
  TORCH_CHECK(t.is_cuda(), name, ": expected CUDA tensors, ", what, " is on ", t.device());
  TORCH_CHECK(t.device() == W.device(), name, ": ", what, " is on ", t.device(), " but W is on ", W.device());
}

// W (K, K, D, H); b_v (D, K) when given; b_h (H, K). Same floating dtype, same CUDA device,
// and small enough for the kernels' 32-bit index arithmetic.
inline Dims check_params(const char* name, const at::Tensor& W, const at::Tensor* b_v, const at::Tensor& b_h) {
  TORCH_CHECK(W.is_cuda(), name, ": expected CUDA tensors, W is on ", W.device());
  check_cuda(name, "b_h", b_h, W);
  if (b_v) check_cuda(name, "b_v", *b_v, W);
  const Dims d = check_param_shapes(name, W, b_v, b_h);
  TORCH_CHECK(d.K <= (int64_t(1) << 20) && d.D < (int64_t(1) << 24) && d.H < (int64_t(1) << 24) &&
                  d.K * d.K * d.D * d.H < (int64_t(1) << 31),
              name, ": W of shape ", W.sizes(), " is too large for the CUDA kernels");
  return d;
}

inline void check_labels(const char* name, const char* what, const at::Tensor& labels, const at::Tensor& W,
                         const Dims& d) {
  check_cuda(name, what, labels, W);
  check_label_shape(name, what, labels, d);
  TORCH_CHECK(labels.size(0) < (int64_t(1) << 32), name, ": ", what, " has too many rows for the CUDA kernels");
}

inline void check_soft(const char* name, const char* what, const at::Tensor& v, const at::Tensor& W, const Dims& d) {
  check_cuda(name, what, v, W);
  check_soft_shape(name, what, v, W, d);
  TORCH_CHECK(v.size(0) < (int64_t(1) << 32), name, ": ", what, " has too many rows for the CUDA kernels");
}

// ---- Transposed copies of W (K_v, K_h, D, H), made once per call on the stream. ----

// (D, K_v, H, K_h): the H*K hidden-logit contribution of visible (i, l) is contiguous.
inline at::Tensor w_il_jm(const at::Tensor& W) { return W.permute({2, 0, 3, 1}).contiguous(); }
// (H, K_h, D, K_v): for a hidden (j, m), the D*K visible couplings are contiguous.
inline at::Tensor w_jm_il(const at::Tensor& W) { return W.permute({3, 1, 2, 0}).contiguous(); }
// (K_v, D, H, K_h): matches the (K, D) layout of a soft label row.
inline at::Tensor w_li_jm(const at::Tensor& W) { return W.permute({0, 2, 3, 1}).contiguous(); }
// Stats in the (D, K_v, H, K_h) layout -> (K, K, D, H).
inline at::Tensor w_from_il_jm(const at::Tensor& s, const Dims& d) {
  return s.view({d.D, d.K, d.H, d.K}).permute({1, 3, 0, 2}).contiguous();
}

// ---- Bounds-check flags. ----
// Kernels never read out of bounds: a label outside [-1, K) (or a hidden state
// outside [0, K)) is skipped and a device int flag is set to 1. Ops off the
// training hot path read the flag back with one small .item() (a sync) and
// raise; the hot ops (cd_grad*, gwg_steps) only read it when the environment
// variable DEEM_CHECK_KERNELS=1 is set, so a training step never syncs. The
// Python layer validates labels before calling in either case.
inline at::Tensor new_flag(const at::Tensor& like) { return at::zeros({1}, like.options().dtype(at::kInt)); }

inline bool check_kernels_env() {
  const char* e = std::getenv("DEEM_CHECK_KERNELS");
  return e != nullptr && e[0] == '1' && e[1] == '\0';
}

inline void raise_if_flagged(const at::Tensor& flag, const char* name, const char* what = "label") {
  const int bad = flag.item<int>();
  TORCH_CHECK(bad == 0, name, ": a ", what, " is out of range; expected ",
              std::strcmp(what, "label") == 0 ? "-1 (missing) or a value in [0, K)" : "a value in [0, K)");
}

// ---- Device properties and shared-memory planning. ----

inline int num_sms() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

inline size_t max_smem_optin() {
  int dev = 0, v = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return static_cast<size_t>(v);
}

inline size_t round16(size_t x) { return (x + 15) & ~size_t(15); }

// Dynamic shared memory is carved into 16-byte aligned regions; an optional
// region that does not fit the budget gets offset -1 and the kernel reads the
// global copy instead (see stage()).
struct SmemPlan {
  size_t used = 0, limit;
  explicit SmemPlan(size_t lim) : limit(lim) {}
  long long add(size_t bytes) {
    const size_t off = round16(used);
    used = off + bytes;
    return static_cast<long long>(off);
  }
  long long add_optional(size_t bytes) {
    if (round16(used) + bytes > limit) return -1;
    return add(bytes);
  }
  bool ok() const { return used <= limit; }
};

template <typename Kernel>
inline void set_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <typename Kernel>
inline int blocks_per_sm(Kernel kernel, int threads, size_t smem) {
  int nb = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, kernel, threads, smem));
  return std::max(nb, 1);
}

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- Device helpers. ----

// Pointer to region `off` of dynamic shared memory filled with g[0, n), or g
// itself when the region did not fit (off < 0). Call __syncthreads() after.
template <typename T>
__device__ __forceinline__ const T* stage(const T* __restrict__ g, int64_t n, long long off, unsigned char* smem) {
  if (off < 0) return g;
  T* s = reinterpret_cast<T*>(smem + off);
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) s[k] = g[k];
  return s;
}

__device__ __forceinline__ double warp_sum(double x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ double warp_max(double x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmax(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ int warp_sum_int(int x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// exp / log in the parameter dtype (float -> expf, double -> exp).
__device__ __forceinline__ float dexp(float x) { return expf(x); }
__device__ __forceinline__ double dexp(double x) { return exp(x); }

// Reads label x, returns it when in [-1, K), else sets *bad and returns -1.
template <typename label_t>
__device__ __forceinline__ int checked_label(label_t x, int K, bool& bad) {
  const int64_t v = static_cast<int64_t>(x);
  if (v < -1 || v >= K) {
    bad = true;
    return -1;
  }
  return static_cast<int>(v);
}

// Flag-setting after a block/thread saw a bad entry. Benign race: all write 1.
__device__ __forceinline__ void raise_flag(int* flag, bool bad) {
  if (bad) *reinterpret_cast<volatile int*>(flag) = 1;
}

// Softmax of one hidden unit's K logits, in place; mirrors cpu::softmax_rows:
// p = exp(l - max) in the parameter dtype, normaliser summed in double, p *= (T)(1/s).
// Returns max + log(s) (the unit's log-sum-exp) in double.
template <typename T>
__device__ __forceinline__ double softmax_unit(T* p, int K, int stride = 1) {
  T mx = p[0];
  for (int m = 1; m < K; ++m) mx = p[m * stride] > mx ? p[m * stride] : mx;
  double s = 0.0;
  for (int m = 0; m < K; ++m) {
    const T e = dexp(static_cast<T>(p[m * stride] - mx));
    p[m * stride] = e;
    s += static_cast<double>(e);
  }
  const T inv = static_cast<T>(1.0 / s);
  for (int m = 0; m < K; ++m) p[m * stride] *= inv;
  return static_cast<double>(mx) + log(s);
}

// Log-sum-exp of one unit without touching the logits.
template <typename T>
__device__ __forceinline__ double lse_unit(const T* p, int K) {
  T mx = p[0];
  for (int m = 1; m < K; ++m) mx = p[m] > mx ? p[m] : mx;
  double s = 0.0;
  for (int m = 0; m < K; ++m) s += static_cast<double>(dexp(static_cast<T>(p[m] - mx)));
  return static_cast<double>(mx) + log(s);
}

// Inverse-CDF draw over a unit's probabilities (mirrors cpu::sample_categorical).
template <typename T>
__device__ __forceinline__ int sample_categorical(const T* p, int K, double u) {
  double cum = 0.0;
  for (int m = 0; m < K; ++m) {
    cum += static_cast<double>(p[m]);
    if (u < cum) return m;
  }
  return K - 1;
}

__device__ __forceinline__ double hidden_uniform(uint64_t seed, int j, int64_t r, uint64_t offset) {
  const Philox4 b = philox_draw(seed, static_cast<uint32_t>(j), static_cast<uint32_t>(r), offset);
  return philox_uniform(b.v[0]);
}

}  // namespace cuda
}  // namespace deem
