// The softmax of the evidence passes (hard_evidence.cpp, csr_evidence.cpp), four rows at a time.
// Per row the pass gathers a few labels' log-probabilities and then takes K exps and a log: once the
// tables sit in cache, that tail is most of the pass. Four rows' scores stored by class take one
// vector exp per class and one vector log per block (simd.h), in every clone the same operations, so
// a row's posterior does not depend on the CPU, on its place in a block or on the thread count.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace deem {
namespace cpu {

constexpr int64_t kSoftmaxRows = 4;

// s[m * kSoftmaxRows + b]: row b's score of class m, K >= 1 classes; in place, q = softmax(s) per row,
// and lse[b] = logsumexp of row b. A row holding a NaN (or only -inf) gets NaN throughout.
void softmax_block(double* s, int64_t K, double* lse);

// Rows [n0, n1) in blocks of kSoftmaxRows: score(n, s) writes row n's K scores into s, use(n, q, lse)
// takes its posterior (K) and logsumexp, rows in order. KC > 0: K == KC known at compile time, the
// scores kept in registers.
template <int KC, class Score, class Use>
inline void softmax_rows_in_blocks(int64_t n0, int64_t n1, int64_t K_, const Score& score, const Use& use) {
  const int64_t K = KC > 0 ? KC : K_;
  double fixed[KC > 0 ? KC * kSoftmaxRows : 1], s_fixed[KC > 0 ? KC : 1], q_fixed[KC > 0 ? KC : 1];
  std::vector<double> heap(KC > 0 ? 0 : K * (kSoftmaxRows + 2));
  double* blk = KC > 0 ? fixed : heap.data();
  double* s = KC > 0 ? s_fixed : heap.data() + K * kSoftmaxRows;
  double* q = KC > 0 ? q_fixed : heap.data() + K * (kSoftmaxRows + 1);
  double lse[kSoftmaxRows];
  for (int64_t n = n0; n < n1; n += kSoftmaxRows) {
    const int64_t rows = std::min(kSoftmaxRows, n1 - n);
    for (int64_t b = 0; b < kSoftmaxRows; ++b) {
      if (b < rows) {
        score(n + b, s);
        for (int64_t m = 0; m < K; ++m) blk[m * kSoftmaxRows + b] = s[m];
      } else {
        for (int64_t m = 0; m < K; ++m) blk[m * kSoftmaxRows + b] = 0.0;  // an unused lane, kept finite
      }
    }
    softmax_block(blk, K, lse);
    for (int64_t b = 0; b < rows; ++b) {
      for (int64_t m = 0; m < K; ++m) q[m] = blk[m * kSoftmaxRows + b];
      use(n + b, static_cast<const double*>(q), lse[b]);
    }
  }
}

}  // namespace cpu
}  // namespace deem
