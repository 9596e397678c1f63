// The per-warp evaluation of a chain state shared by the GWG and DLP kernels:
// hidden logits and probabilities, f = -F and the gradient df/dx. `Args` is
// any kernel argument struct with D, K, H and the b_v / b_h pointers.
#pragma once
#include "cuda/common.cuh"

namespace deem {
namespace cuda {

// Hidden probabilities P, gradient g[i, l] (present i only) at x; returns f(x) = -F(x) (double).
template <typename Args, typename scalar_t>
__device__ double eval_state(const Args& a, const int* x, scalar_t* P, scalar_t* g,
                             const scalar_t* Wt, const scalar_t* Wg, int lane) {
  const int D = a.D, K = a.K, H = a.H, HK = H * K, DK = D * K;
  for (int e = lane; e < HK; e += 32) {
    scalar_t s = a.bh[e];
    for (int i = 0; i < D; ++i) {
      const int xi = x[i];
      if (xi >= 0) s += Wt[(int64_t(i) * K + xi) * HK + e];
    }
    P[e] = s;
  }
  __syncwarp();
  double f = 0.0;
  for (int j = lane; j < H; j += 32) f += softmax_unit(P + j * K, K);
  for (int i = lane; i < D; i += 32) {
    const int xi = x[i];
    if (xi >= 0) f += static_cast<double>(a.bv[i * K + xi]);
  }
  f = warp_sum(f);
  __syncwarp();
  for (int idx = lane; idx < DK; idx += 32) {
    const int i = idx / K;
    if (x[i] < 0) continue;
    scalar_t s = a.bv[idx];
    for (int e = 0; e < HK; ++e) s += P[e] * Wg[int64_t(e) * DK + idx];
    g[idx] = s;
  }
  __syncwarp();
  return f;
}

}  // namespace cuda
}  // namespace deem
