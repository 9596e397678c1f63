// Sufficient statistics of F accumulated in one pass, in a fixed chunking.
// Buffer of one chunk (double): [dW in (D, K_v, H, K_h) | db_v (D, K) | db_h (H, K) | loss].
#pragma once
#include "cpu/common.h"

namespace deem {
namespace cpu {

struct StatLayout {
  int64_t w, bv, bh, loss, size;
  explicit StatLayout(const Dims& d) {
    w = 0;
    bv = d.D * d.K * d.H * d.K;
    bh = bv + d.D * d.K;
    loss = bh + d.H * d.K;
    size = loss + 1;
  }
};

// At most this many partial buffers: memory stays O(kMaxPartials * size) for any row count.
constexpr int64_t kMaxPartials = 64;

// Runs fn(r0, r1, buf) on the chunks [c*kChunk, (c+1)*kChunk) of [0, R). The
// chunks are split into at most kMaxPartials contiguous groups, fixed by R alone;
// a group's chunks add into its own zeroed buffer in order, groups run in
// parallel, and the buffers are summed in group order: the result is bitwise
// independent of the thread count.
template <typename Fn>
std::vector<double> chunked_reduce(int64_t R, int64_t size, const Fn& fn) {
  const int64_t nchunks = (R + kChunk - 1) / kChunk;
  const int64_t groups = std::max<int64_t>(std::min(nchunks, kMaxPartials), 1);
  std::vector<double> bufs(static_cast<size_t>(groups * size), 0.0);
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t c0 = g * nchunks / groups, c1 = (g + 1) * nchunks / groups;
      for (int64_t c = c0; c < c1; ++c) fn(c * kChunk, std::min(R, (c + 1) * kChunk), bufs.data() + g * size);
    }
  });
  std::vector<double> total(bufs.begin(), bufs.begin() + size);
  for (int64_t g = 1; g < groups; ++g) {
    const double* b = bufs.data() + g * size;
    for (int64_t k = 0; k < size; ++k) total[k] += b[k];
  }
  return total;
}

// First row of each of chunked_reduce's groups for R rows, plus R: group g holds rows
// [starts[g], starts[g + 1]). A reduction that must reproduce chunked_reduce's sums bit for bit
// (the sparse pass's per-voter counts) adds within these groups in row order, then the
// groups in order.
inline std::vector<int64_t> chunked_group_starts(int64_t R) {
  const int64_t nchunks = (R + kChunk - 1) / kChunk;
  const int64_t groups = std::max<int64_t>(std::min(nchunks, kMaxPartials), 1);
  std::vector<int64_t> starts(static_cast<size_t>(groups + 1));
  for (int64_t g = 0; g < groups; ++g) starts[g] = std::min(R, (g * nchunks / groups) * kChunk);
  starts[groups] = R;
  return starts;
}

// Per-thread scratch for one row.
template <typename T>
struct RowScratch {
  std::vector<T> L, P;
  std::vector<double> wp;
  std::vector<int64_t> h;
  explicit RowScratch(const Dims& d) : L(d.H * d.K), P(d.H * d.K), wp(d.H * d.K), h(d.H) {}
};

// Hidden statistic of a row: wp[jm] = w * P[jm], or w * onehot(h_j) when sampling
// (draw of row r, unit j). Returns nothing; fills s.wp.
template <typename T>
inline void hidden_stat(RowScratch<T>& s, const Dims& d, double w, bool sample, int64_t seed, int64_t offset,
                        int64_t r) {
  const int64_t HK = d.H * d.K;
  if (!sample) {
    for (int64_t c = 0; c < HK; ++c) s.wp[c] = w * static_cast<double>(s.P[c]);
    return;
  }
  for (int64_t c = 0; c < HK; ++c) s.wp[c] = 0.0;
  for (int64_t j = 0; j < d.H; ++j) {
    const int64_t m = sample_categorical(s.P.data() + j * d.K, d.K, hidden_uniform(seed, j, r, offset));
    s.wp[j * d.K + m] = w;
  }
}

// Hard row: logits, F, and stats with weight w (dF/dtheta = -stat). Adds lw * F to the loss.
template <typename T, typename label_t>
inline void accumulate_hard_row(const char* name, const label_t* x, int64_t row, const Dims& d, const T* Wt,
                                const T* bv, const T* bh, double w, double lw, bool sample, int64_t seed,
                                int64_t offset, int64_t r, RowScratch<T>& s, const StatLayout& lay, double* buf) {
  const int64_t K = d.K, HK = d.H * d.K;
  hard_logits_row(name, x, row, d, Wt, bh, s.L.data());
  double f = softmax_rows(s.L.data(), s.P.data(), d.H, K);
  hidden_stat(s, d, w, sample, seed, offset, r);
  const double* wp = s.wp.data();
  for (int64_t i = 0; i < d.D; ++i) {
    const int64_t xi = static_cast<int64_t>(x[i]);
    if (xi < 0) continue;
    f += static_cast<double>(bv[i * K + xi]);
    double* blk = buf + lay.w + (i * K + xi) * HK;
    for (int64_t c = 0; c < HK; ++c) blk[c] += wp[c];
    buf[lay.bv + i * K + xi] += w;
  }
  for (int64_t c = 0; c < HK; ++c) buf[lay.bh + c] += wp[c];
  buf[lay.loss] += lw * (-f);
}

// Soft row v (K, D): stats weighted by v[l, i]. Returns F. If dv is given, writes
// dv[l, i] = gv * dF/dv[l, i] = -gv * (b_v[i, l] + sum_jm P[jm] W[l, m, i, j]).
template <typename T>
inline double accumulate_soft_row(const T* v, const Dims& d, const T* Ws, const T* bv, const T* bh, double w,
                                  bool sample, int64_t seed, int64_t offset, int64_t r, RowScratch<T>& s,
                                  const StatLayout& lay, double* buf, T* dv = nullptr, double gv = 0.0) {
  const int64_t K = d.K, D = d.D, HK = d.H * d.K;
  soft_logits_row(v, d, Ws, bh, s.L.data());
  double f = softmax_rows(s.L.data(), s.P.data(), d.H, K);
  hidden_stat(s, d, w, sample, seed, offset, r);
  const double* wp = s.wp.data();
  for (int64_t i = 0; i < D; ++i) {
    for (int64_t l = 0; l < K; ++l) {
      const double a = static_cast<double>(v[l * D + i]);
      f += a * static_cast<double>(bv[i * K + l]);
      double* blk = buf + lay.w + (i * K + l) * HK;
      for (int64_t c = 0; c < HK; ++c) blk[c] += a * wp[c];
      buf[lay.bv + i * K + l] += w * a;
    }
  }
  for (int64_t c = 0; c < HK; ++c) buf[lay.bh + c] += wp[c];
  if (dv) {
    for (int64_t li = 0; li < K * D; ++li) {
      const int64_t l = li / D, i = li % D;
      const T* wr = Ws + li * HK;
      double acc = static_cast<double>(bv[i * K + l]);
      for (int64_t c = 0; c < HK; ++c) acc += static_cast<double>(s.P[c]) * static_cast<double>(wr[c]);
      dv[li] = static_cast<T>(-gv * acc);
    }
  }
  return -f;
}

// Writes the summed stats into (dW (K,K,D,H), db_v (D,K), db_h (H,K)).
template <typename T>
inline void store_stats(const std::vector<double>& tot, const Dims& d, const StatLayout& lay, at::Tensor& dW,
                        at::Tensor& dbv, at::Tensor& dbh) {
  store_w_from_il_jm(tot.data() + lay.w, dW.data_ptr<T>(), d);
  T* pv = dbv.data_ptr<T>();
  for (int64_t k = 0; k < d.D * d.K; ++k) pv[k] = static_cast<T>(tot[lay.bv + k]);
  T* ph = dbh.data_ptr<T>();
  for (int64_t k = 0; k < d.H * d.K; ++k) ph[k] = static_cast<T>(tot[lay.bh + k]);
}

}  // namespace cpu
}  // namespace deem
