// csr_evidence_pass: hard_evidence_pass (csrc/cpu/hard_evidence.cpp) on labels stored sparse
// (common/csr.h): per item n, with its labels j in [row_ptr[n], row_ptr[n+1]),
//   s[m] = base[m] + sum_j lp[voter_j, label_j, m],   q = softmax(s),
//   nll -= logsumexp(s),  mass += q,  counts[l, m, i] += q_n[m] for each label (n, i, l).
// One fused pass over the by-item view: an item's q is added to its voters' counts while it is in
// registers, so the labels are read once and no (N, K) buffer is written unless the posterior is
// asked for. The CPU kernel does not read the by-voter view (the CUDA kernels do).
//  * Determinism: the items are cut into G contiguous groups fixed by the data alone (N, L, D, K;
//    never the thread count). A group adds its items, in order, into its own zeroed (D, K, K)
//    partial and (K + 1) totals; groups run in parallel and the partials are summed in group
//    order. The result is bitwise the same for any thread count.
//  * Memory: G grows with the labels, G <= L / (kLabelsPerPartial * D * K), so the partials,
//    G * D * K * K doubles, stay within L * K / 4 doubles: O(labels * K + N * K + D * K * K).
// Every offset, voter and label index is bounds-checked before it indexes anything.
#include "common/csr.h"
#include "cpu/softmax_block.h"
#include "cpu/stats.h"

namespace deem {
namespace cpu {
namespace {

[[noreturn]] void bad_index(const char* name, const char* what, int64_t v, int64_t at, int64_t bound) {
  TORCH_CHECK(false, name, ": ", what, " ", v, " at position ", at, " is outside [0, ", bound, ")");
}

// A group's (D, K, K) partial pays for itself when the group holds this many labels per cell row.
constexpr int64_t kLabelsPerPartial = 4;

// First item of each group, plus N: at most kMaxPartials groups of whole kChunk-item chunks. The
// count is a power of two, so it splits evenly over 2, 4, 8 ... threads (3 groups on 2 threads left
// one thread idle for a third of the pass).
std::vector<int64_t> group_starts(int64_t N, int64_t L, int64_t D, int64_t K, bool want_counts) {
  const int64_t nchunks = (N + kChunk - 1) / kChunk;
  int64_t bound = std::min(nchunks, kMaxPartials);
  if (want_counts) bound = std::min(bound, L / std::max<int64_t>(kLabelsPerPartial * D * K, 1));
  int64_t groups = 1;
  while (groups * 2 <= bound) groups *= 2;
  std::vector<int64_t> starts(static_cast<size_t>(groups + 1));
  for (int64_t g = 0; g < groups; ++g) starts[g] = std::min(N, (g * nchunks / groups) * kChunk);
  starts[groups] = N;
  return starts;
}

// How many labels ahead the pass prefetches the voter rows it will gather from and add into: the
// rows are random reads (the voters of consecutive items are unrelated), each a cache miss once the
// (D, K, K) tables outgrow the cache, and the labels' own streams say which rows come next.
constexpr int64_t kPrefetchAhead = 16;

// Items [n0, n1): totals (mass (K), nll) into tot, counts into part ((D, K_l, K_m), or null), the
// posterior into q (or null). KC > 0: the class count known at compile time (K == KC), so the
// per-label loops over the K classes unroll; KC == 0: any K. The arithmetic is the same either way.
template <typename label_t, int KC>
void item_pass(const char* name, const int64_t* row_ptr, const int64_t* voter, const label_t* label, int64_t n0,
               int64_t n1, int64_t L, int64_t D, int64_t K_, const double* lp, const double* base, double* q,
               double* part, double* tot) {
  const int64_t K = KC > 0 ? KC : K_;
  const int64_t l_end = row_ptr[n1] <= L && row_ptr[n1] >= 0 ? row_ptr[n1] : L;
  auto prefetch = [&](int64_t j) {
    if (j < l_end) {  // a hint only: an index checked below is never dereferenced unchecked
      const int64_t i = voter[j], l = static_cast<int64_t>(label[j]);
      if (i >= 0 && i < D && l >= 0 && l < K) {
        __builtin_prefetch(lp + (i * K + l) * K);
        if (part != nullptr) __builtin_prefetch(part + (i * K + l) * K, 1);
      }
    }
  };
  // With K known, s is a local array the compiler keeps in registers: through a heap buffer, which
  // might alias lp and part, every label's add was a store (a fifth of the pass).
  auto score = [&](int64_t n, double* s) {
    const int64_t j0 = row_ptr[n], j1 = row_ptr[n + 1];
    TORCH_CHECK(0 <= j0 && j0 <= j1 && j1 <= L, name, ": row_ptr must rise from 0 to ", L,
                "; item ", n, " spans [", j0, ", ", j1, ")");
    for (int64_t m = 0; m < K; ++m) s[m] = base[m];
    for (int64_t j = j0; j < j1; ++j) {
      prefetch(j + kPrefetchAhead);
      const int64_t i = voter[j], l = static_cast<int64_t>(label[j]);
      if (i < 0 || i >= D) bad_index(name, "voter", i, j, D);
      if (l < 0 || l >= K) bad_index(name, "label", l, j, K);
      const double* w = lp + (i * K + l) * K;
      for (int64_t m = 0; m < K; ++m) s[m] += w[m];
    }
  };
  auto use = [&](int64_t n, const double* s, double lse) {
    tot[K] -= lse;
    for (int64_t m = 0; m < K; ++m) tot[m] += s[m];
    if (q != nullptr) std::copy(s, s + K, q + n * K);
    if (part != nullptr) {
      for (int64_t j = row_ptr[n], j1 = row_ptr[n + 1]; j < j1; ++j) {  // indices checked in score
        double* c = part + (voter[j] * K + static_cast<int64_t>(label[j])) * K;
        for (int64_t m = 0; m < K; ++m) c[m] += s[m];
      }
    }
  };
  softmax_rows_in_blocks<KC>(n0, n1, K, score, use);
}

// item_pass with K fixed at compile time for the common small class counts.
template <typename label_t>
void item_pass_any(const char* name, const int64_t* row_ptr, const int64_t* voter, const label_t* label, int64_t n0,
                   int64_t n1, int64_t L, int64_t D, int64_t K, const double* lp, const double* base, double* q,
                   double* part, double* tot) {
  switch (K) {
    case 2: return item_pass<label_t, 2>(name, row_ptr, voter, label, n0, n1, L, D, K, lp, base, q, part, tot);
    case 3: return item_pass<label_t, 3>(name, row_ptr, voter, label, n0, n1, L, D, K, lp, base, q, part, tot);
    case 4: return item_pass<label_t, 4>(name, row_ptr, voter, label, n0, n1, L, D, K, lp, base, q, part, tot);
    case 5: return item_pass<label_t, 5>(name, row_ptr, voter, label, n0, n1, L, D, K, lp, base, q, part, tot);
    default: return item_pass<label_t, 0>(name, row_ptr, voter, label, n0, n1, L, D, K, lp, base, q, part, tot);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> csr_evidence_pass(
    const at::Tensor& row_ptr_, const at::Tensor& voter_, const at::Tensor& label_, const at::Tensor& col_ptr_,
    const at::Tensor& col_row_, const at::Tensor& col_label_, const at::Tensor& logp, const at::Tensor& logpi,
    const at::Tensor& log_abstain, bool want_counts, bool want_posterior) {
  const char* name = "deem::csr_evidence_pass";
  for (const at::Tensor* t : {&row_ptr_, &voter_, &label_, &col_ptr_, &col_row_, &col_label_, &logp, &logpi,
                              &log_abstain})
    TORCH_CHECK(t->device().is_cpu(), name, ": expected CPU tensors");
  const CsrArgs a = csr_args(name, row_ptr_, voter_, label_, col_ptr_, col_row_, col_label_, logp, logpi,
                             log_abstain, want_counts);
  const int64_t N = a.N, D = a.D, K = a.K, L = a.L;
  const at::Tensor row_ptr = row_ptr_.contiguous(), voter = voter_.contiguous(), label = label_.contiguous();
  const auto f64 = logp.options();
  TORCH_CHECK(row_ptr.data_ptr<int64_t>()[0] == 0 && row_ptr.data_ptr<int64_t>()[N] == L, name,
              ": row_ptr must rise from 0 to the number of labels ", L);
  at::Tensor q = at::empty({want_posterior ? N : 0, K}, f64);
  at::Tensor counts = at::zeros({want_counts ? D : 0, K, K}, f64);  // (D, K_l, K_m) while accumulating
  const std::vector<int64_t> starts = group_starts(N, L, D, K, want_counts);
  const int64_t groups = static_cast<int64_t>(starts.size()) - 1, cells = D * K * K;
  // group 0 adds straight into counts; the others into their own partials, summed in order below
  std::vector<double> partials(want_counts ? static_cast<size_t>((groups - 1) * cells) : 0, 0.0);
  std::vector<double> tots(static_cast<size_t>(groups * (K + 1)), 0.0);
  DEEM_DISPATCH_LABELS(label.scalar_type(), name, [&] {
    const label_t* lab = label.data_ptr<label_t>();
    at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) {
        double* part = !want_counts ? nullptr
                       : g == 0     ? counts.data_ptr<double>()
                                    : partials.data() + (g - 1) * cells;
        item_pass_any(name, row_ptr.data_ptr<int64_t>(), voter.data_ptr<int64_t>(), lab, starts[g], starts[g + 1], L,
                  D, K, a.lp.data_ptr<double>(), a.base.data_ptr<double>(),
                  want_posterior ? q.data_ptr<double>() : nullptr, part, tots.data() + g * (K + 1));
      }
    });
  });
  if (want_counts && groups > 1) {
    double* c = counts.data_ptr<double>();
    at::parallel_for(0, cells, 4096, [&](int64_t k0, int64_t k1) {
      for (int64_t g = 1; g < groups; ++g) {
        const double* p = partials.data() + (g - 1) * cells;
        for (int64_t k = k0; k < k1; ++k) c[k] += p[k];
      }
    });
  }
  std::vector<double> tot(tots.begin(), tots.begin() + K + 1);
  for (int64_t g = 1; g < groups; ++g)
    for (int64_t k = 0; k <= K; ++k) tot[k] += tots[g * (K + 1) + k];
  at::Tensor mass = at::empty({K}, f64);
  std::copy(tot.begin(), tot.begin() + K, mass.data_ptr<double>());
  return {want_counts ? counts.permute({1, 2, 0}).contiguous() : at::empty({0, K, D}, f64), mass,
          at::scalar_tensor(tot[K], f64), want_posterior ? q : at::empty({0, K}, f64)};
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) { m.impl("csr_evidence_pass", &deem::cpu::csr_evidence_pass); }
