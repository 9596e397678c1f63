// Shared helpers of the CPU kernels: device checks (shapes: common/checks.h), the
// transposed copies of W, per-row hidden logits / softmax, and a fast exp.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "common/checks.h"
#include "common/philox.h"

namespace deem {
namespace cpu {

// Rows per reduction chunk. Fixed, so reductions are bitwise identical for any
// thread count: each chunk accumulates into its own buffer, buffers are summed
// in chunk order.
constexpr int64_t kChunk = 512;

using deem::Dims;
using deem::is_label_dtype;

// W (K, K, D, H); b_v (D, K) when given; b_h (H, K). Same floating dtype, CPU.
inline Dims check_params(const char* name, const at::Tensor& W, const at::Tensor* b_v, const at::Tensor& b_h) {
  TORCH_CHECK(W.device().is_cpu(), name, ": expected CPU tensors, W is on ", W.device());
  TORCH_CHECK(b_h.device().is_cpu(), name, ": expected CPU tensors, b_h is on ", b_h.device());
  if (b_v) TORCH_CHECK(b_v->device().is_cpu(), name, ": expected CPU tensors, b_v is on ", b_v->device());
  return check_param_shapes(name, W, b_v, b_h);
}

inline void check_labels(const char* name, const char* what, const at::Tensor& labels, const Dims& d) {
  TORCH_CHECK(labels.device().is_cpu(), name, ": expected CPU tensors, ", what, " is on ", labels.device());
  check_label_shape(name, what, labels, d);
}

inline void check_soft(const char* name, const char* what, const at::Tensor& v, const at::Tensor& W, const Dims& d) {
  TORCH_CHECK(v.device().is_cpu(), name, ": expected CPU tensors, ", what, " is on ", v.device());
  check_soft_shape(name, what, v, W, d);
}

// Throws unless x is -1 or in [0, K).
[[noreturn]] inline void bad_label(const char* name, int64_t x, int64_t row, int64_t col, int64_t K) {
  TORCH_CHECK(false, name, ": label ", x, " at (row ", row, ", column ", col,
              ") is out of range; expected -1 (missing) or a value in [0, ", K, ")");
}

template <typename label_t>
inline int64_t checked_label(const char* name, label_t x, int64_t row, int64_t col, int64_t K) {
  const int64_t v = static_cast<int64_t>(x);
  if (v < -1 || v >= K) bad_label(name, v, row, col, K);
  return v;
}

// ---- Transposed copies of W (K_v, K_h, D, H), tiny, made once per call. ----

// (D, K_v, H, K_h): the H*K hidden-logit contribution of visible (i, l) is contiguous.
template <typename T>
std::vector<T> w_il_jm(const T* w, const Dims& d) {
  const int64_t K = d.K, D = d.D, H = d.H;
  std::vector<T> out(K * K * D * H);
  for (int64_t l = 0; l < K; ++l)
    for (int64_t m = 0; m < K; ++m)
      for (int64_t i = 0; i < D; ++i)
        for (int64_t j = 0; j < H; ++j) out[((i * K + l) * H + j) * K + m] = w[((l * K + m) * D + i) * H + j];
  return out;
}

// (H, K_h, D, K_v): for a hidden (j, m), the D*K visible couplings are contiguous.
template <typename T>
std::vector<T> w_jm_il(const T* w, const Dims& d) {
  const int64_t K = d.K, D = d.D, H = d.H;
  std::vector<T> out(K * K * D * H);
  for (int64_t l = 0; l < K; ++l)
    for (int64_t m = 0; m < K; ++m)
      for (int64_t i = 0; i < D; ++i)
        for (int64_t j = 0; j < H; ++j) out[((j * K + m) * D + i) * K + l] = w[((l * K + m) * D + i) * H + j];
  return out;
}

// (K_v, D, H, K_h): matches the (K, D) layout of a soft label row.
template <typename T>
std::vector<T> w_li_jm(const T* w, const Dims& d) {
  const int64_t K = d.K, D = d.D, H = d.H;
  std::vector<T> out(K * K * D * H);
  for (int64_t l = 0; l < K; ++l)
    for (int64_t m = 0; m < K; ++m)
      for (int64_t i = 0; i < D; ++i)
        for (int64_t j = 0; j < H; ++j) out[((l * D + i) * H + j) * K + m] = w[((l * K + m) * D + i) * H + j];
  return out;
}

// Stats in the (D, K_v, H, K_h) layout -> a (K, K, D, H) tensor.
template <typename T>
void store_w_from_il_jm(const double* s, T* out, const Dims& d) {
  const int64_t K = d.K, D = d.D, H = d.H;
  for (int64_t l = 0; l < K; ++l)
    for (int64_t m = 0; m < K; ++m)
      for (int64_t i = 0; i < D; ++i)
        for (int64_t j = 0; j < H; ++j)
          out[((l * K + m) * D + i) * H + j] = static_cast<T>(s[((i * K + l) * H + j) * K + m]);
}

// ---- Per-row pieces. ----

// L[jm] = b_h[jm] + sum_{i present} Wt[i, x_i, jm]   (Wt from w_il_jm)
template <typename T, typename label_t>
inline void hard_logits_row(const char* name, const label_t* x, int64_t row, const Dims& d, const T* Wt, const T* bh,
                            T* L) {
  const int64_t HK = d.H * d.K;
  for (int64_t c = 0; c < HK; ++c) L[c] = bh[c];
  for (int64_t i = 0; i < d.D; ++i) {
    const int64_t xi = checked_label(name, x[i], row, i, d.K);
    if (xi < 0) continue;
    const T* w = Wt + (i * d.K + xi) * HK;
    for (int64_t c = 0; c < HK; ++c) L[c] += w[c];
  }
}

// L[jm] = b_h[jm] + sum_{l,i} v[l, i] Ws[l, i, jm]   (Ws from w_li_jm, v row (K, D))
template <typename T>
inline void soft_logits_row(const T* v, const Dims& d, const T* Ws, const T* bh, T* L) {
  const int64_t HK = d.H * d.K, KD = d.K * d.D;
  for (int64_t c = 0; c < HK; ++c) L[c] = bh[c];
  for (int64_t li = 0; li < KD; ++li) {
    const T a = v[li];
    const T* w = Ws + li * HK;
    for (int64_t c = 0; c < HK; ++c) L[c] += a * w[c];
  }
}

// P[j, :] = softmax(L[j, :]) for each hidden unit; returns sum_j logsumexp(L[j, :]).
template <typename T>
inline double softmax_rows(const T* L, T* P, int64_t H, int64_t K) {
  double lse = 0.0;
  for (int64_t j = 0; j < H; ++j) {
    const T* l = L + j * K;
    T* p = P + j * K;
    T mx = l[0];
    for (int64_t m = 1; m < K; ++m) mx = std::max(mx, l[m]);
    double s = 0.0;
    for (int64_t m = 0; m < K; ++m) {
      p[m] = std::exp(l[m] - mx);
      s += static_cast<double>(p[m]);
    }
    const T inv = static_cast<T>(1.0 / s);
    for (int64_t m = 0; m < K; ++m) p[m] *= inv;
    lse += static_cast<double>(mx) + std::log(s);
  }
  return lse;
}

// One-hot sample h_j ~ P[j, :] by inverse CDF with the Philox draw of (row r, unit j).
template <typename T>
inline int64_t sample_categorical(const T* p, int64_t K, double u) {
  double cum = 0.0;
  for (int64_t m = 0; m < K; ++m) {
    cum += static_cast<double>(p[m]);
    if (u < cum) return m;
  }
  return K - 1;
}

// q = softmax(s) in place over K doubles; returns logsumexp(s). The E-step softmax of the
// evidence passes: the dense and the sparse pass share it, so their posteriors agree bit for bit.
inline double softmax_in_place(double* s, int64_t K) {
  double mx = s[0];
  for (int64_t m = 1; m < K; ++m) mx = std::max(mx, s[m]);
  double z = 0.0;
  for (int64_t m = 0; m < K; ++m) z += (s[m] = std::exp(s[m] - mx));
  const double inv = 1.0 / z;  // K exponentials and one log: the softmax is the hot loop's tail
  for (int64_t m = 0; m < K; ++m) s[m] *= inv;
  return mx + std::log(z);
}

inline double hidden_uniform(int64_t seed, int64_t j, int64_t r, int64_t offset) {
  const Philox4 b = philox_draw(static_cast<uint64_t>(seed), static_cast<uint32_t>(j), static_cast<uint32_t>(r),
                                static_cast<uint64_t>(offset));
  return philox_uniform(b.v[0]);
}

}  // namespace cpu
}  // namespace deem
