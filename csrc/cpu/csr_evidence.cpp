// csr_evidence_pass: hard_evidence_pass (csrc/cpu/hard_evidence.cpp) on labels stored sparse
// (common/csr.h): per item n, with its labels j in [row_ptr[n], row_ptr[n+1]),
//   s[m] = base[m] + sum_j lp[voter_j, label_j, m],   q = softmax(s),
//   nll -= logsumexp(s),  mass += q,  counts[l, m, i] += q_n[m] for each label (n, i, l).
// Memory and time are O(labels * K + N * K + D * K * K), whatever N * D is.
//  * Items: the fixed chunking of stats.h reduces mass and nll (bitwise independent of the
//    thread count); each item's q goes to a (N, K) buffer.
//  * Counts: one owner per voter. A thread takes whole voters and adds their labels' q in
//    the by-voter view's order (items ascending), so no partial (D, K, K) buffers and no
//    atomics: the counts are deterministic and the working set stays O(labels + D K^2 + N K).
//    The sums follow chunked_reduce's grouping of the items (within a group in item order,
//    then the groups in order), so they equal the dense pass's bit for bit, and a fit gives
//    the same model in either layout.
// Every offset, voter, item and label index is bounds-checked before it indexes anything.
#include "common/csr.h"
#include "cpu/stats.h"

namespace deem {
namespace cpu {
namespace {

[[noreturn]] void bad_index(const char* name, const char* what, int64_t v, int64_t at, int64_t bound) {
  TORCH_CHECK(false, name, ": ", what, " ", v, " at position ", at, " is outside [0, ", bound, ")");
}

template <typename label_t>
void item_pass(const char* name, const int64_t* row_ptr, const int64_t* voter, const label_t* label, int64_t r0,
               int64_t r1, int64_t L, int64_t D, int64_t K, const double* lp, const double* base, double* q,
               double* buf) {
  std::vector<double> s(K);
  for (int64_t n = r0; n < r1; ++n) {
    const int64_t j0 = row_ptr[n], j1 = row_ptr[n + 1];
    TORCH_CHECK(0 <= j0 && j0 <= j1 && j1 <= L, name, ": row_ptr must rise from 0 to ", L,
                "; item ", n, " spans [", j0, ", ", j1, ")");
    for (int64_t m = 0; m < K; ++m) s[m] = base[m];
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t i = voter[j], l = static_cast<int64_t>(label[j]);
      if (i < 0 || i >= D) bad_index(name, "voter", i, j, D);
      if (l < 0 || l >= K) bad_index(name, "label", l, j, K);
      const double* w = lp + (i * K + l) * K;
      for (int64_t m = 0; m < K; ++m) s[m] += w[m];
    }
    buf[K] -= softmax_in_place(s.data(), K);
    double* qn = q + n * K;
    for (int64_t m = 0; m < K; ++m) {
      qn[m] = s[m];
      buf[m] += s[m];
    }
  }
}

template <typename label_t>
void voter_counts(const char* name, const int64_t* col_ptr, const int64_t* col_row, const label_t* col_label,
                  int64_t N, int64_t D, int64_t K, int64_t L, const double* q, double* out) {
  // Validate the offsets first (cheap, O(D)) so that threads only read in-range spans.
  TORCH_CHECK(col_ptr[0] == 0 && col_ptr[D] == L, name, ": col_ptr must rise from 0 to ", L);
  for (int64_t i = 0; i < D; ++i)
    TORCH_CHECK(col_ptr[i] <= col_ptr[i + 1], name, ": col_ptr must not decrease (voter ", i, ")");
  const std::vector<int64_t> starts = chunked_group_starts(N);
  const int64_t groups = static_cast<int64_t>(starts.size()) - 1;
  at::parallel_for(0, D, 64, [&](int64_t i0, int64_t i1) {
    std::vector<double> part(K * K);
    for (int64_t i = i0; i < i1; ++i) {
      double* c = out + i * K * K;  // (K_l, K_m) of voter i, zero on entry
      int64_t g = 0, prev = -1;
      std::fill(part.begin(), part.end(), 0.0);
      for (int64_t j = col_ptr[i]; j < col_ptr[i + 1]; ++j) {
        const int64_t n = col_row[j], l = static_cast<int64_t>(col_label[j]);
        if (n < 0 || n >= N) bad_index(name, "col_row", n, j, N);
        if (l < 0 || l >= K) bad_index(name, "col_label", l, j, K);
        TORCH_CHECK(n > prev, name, ": a voter's items must be strictly ascending in the by-voter view (voter ", i,
                    ")");
        prev = n;
        if (n >= starts[g + 1]) {  // the item opens a later group: fold the finished group in
          for (int64_t k = 0; k < K * K; ++k) c[k] += part[k];
          std::fill(part.begin(), part.end(), 0.0);
          while (g + 1 < groups && n >= starts[g + 1]) ++g;
        }
        const double* qn = q + n * K;
        double* pl = part.data() + l * K;
        for (int64_t m = 0; m < K; ++m) pl[m] += qn[m];
      }
      for (int64_t k = 0; k < K * K; ++k) c[k] += part[k];
    }
  });
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
  at::Tensor q = at::empty({N, K}, f64);
  at::Tensor counts = at::zeros({want_counts ? D : 0, K, K}, f64);  // (D, K_l, K_m) while accumulating
  std::vector<double> tot;
  DEEM_DISPATCH_LABELS(label.scalar_type(), name, [&] {
    const label_t* lab = label.data_ptr<label_t>();
    tot = chunked_reduce(N, K + 1, [&](int64_t r0, int64_t r1, double* buf) {
      item_pass(name, row_ptr.data_ptr<int64_t>(), voter.data_ptr<int64_t>(), lab, r0, r1, L, D, K,
                a.lp.data_ptr<double>(), a.base.data_ptr<double>(), q.data_ptr<double>(), buf);
    });
    if (want_counts) {
      const at::Tensor col_ptr = col_ptr_.contiguous(), col_row = col_row_.contiguous();
      const at::Tensor col_label = col_label_.contiguous();
      voter_counts(name, col_ptr.data_ptr<int64_t>(), col_row.data_ptr<int64_t>(), col_label.data_ptr<label_t>(),
                   N, D, K, L, q.data_ptr<double>(), counts.data_ptr<double>());
    }
  });
  at::Tensor mass = at::empty({K}, f64);
  std::copy(tot.begin(), tot.begin() + K, mass.data_ptr<double>());
  return {want_counts ? counts.permute({1, 2, 0}).contiguous() : at::empty({0, K, D}, f64), mass,
          at::scalar_tensor(tot[K], f64), want_posterior ? q : at::empty({0, K}, f64)};
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) { m.impl("csr_evidence_pass", &deem::cpu::csr_evidence_pass); }
