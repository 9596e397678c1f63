// hard_evidence_pass: one E-step pass of the one-hidden-unit (Dawid–Skene) model over
// hard labels (N, D), -1 = missing, fused and in double: per row,
//   s[m]   = base[m] + sum_{i present} (logp[x_i, m, i] - a[i, m])
//   base   = logpi + sum_i a[i, :]        (a = log_abstain; absent: a = 0, base = logpi)
//   q      = softmax(s), nll -= logsumexp(s), mass += q, counts[x_i, m, i] += q[m]
// The abstention terms of informative missingness enter as "all voters minus the
// present ones", so a row costs O(present labels * K) whatever D is. The sums run in
// the fixed chunking of stats.h (bitwise independent of the thread count); every
// label is bounds-checked before it indexes anything.
#include "common/evidence.h"
#include "cpu/softmax_block.h"
#include "cpu/stats.h"

namespace deem {
namespace cpu {
namespace {

struct Layout {
  int64_t counts, mass, nll, size;
  Layout(int64_t K, int64_t D, bool want_counts) {
    counts = 0;
    mass = want_counts ? D * K * K : 0;  // counts kept as (D, K_l, K_m): a row's updates are contiguous in m
    nll = mass + K;
    size = nll + 1;
  }
};

struct Pass {
  int64_t K, D;
  const double* lp;    // (D, K_l, K_m): logp[l, m, i] - a[i, m], transposed once per call
  const double* base;  // (K,)
  Layout lay;
  bool want_counts;
  double* post;  // (N, K) or null
};

// KC > 0: the class count known at compile time (K == KC); the scores then live in a local array the
// compiler keeps in registers (through a heap buffer, which might alias lp and buf, every label's add
// was a store). KC == 0: any K. The arithmetic is the same either way; the softmax takes four rows at
// a time (softmax_block.h).
template <typename label_t, int KC>
void pass_rows(const char* name, const label_t* x, int64_t r0, int64_t r1, const Pass& ps, double* buf) {
  const int64_t K = KC > 0 ? KC : ps.K, D = ps.D;
  auto score = [&](int64_t n, double* s) {
    const label_t* xn = x + n * D;
    for (int64_t m = 0; m < K; ++m) s[m] = ps.base[m];
    for (int64_t i = 0; i < D; ++i) {
      const int64_t l = checked_label(name, xn[i], n, i, K);
      if (l < 0) continue;
      const double* w = ps.lp + (i * K + l) * K;
      for (int64_t m = 0; m < K; ++m) s[m] += w[m];
    }
  };
  auto use = [&](int64_t n, const double* s, double lse) {
    buf[ps.lay.nll] -= lse;
    for (int64_t m = 0; m < K; ++m) buf[ps.lay.mass + m] += s[m];
    if (ps.post)
      for (int64_t m = 0; m < K; ++m) ps.post[n * K + m] = s[m];
    if (!ps.want_counts) return;
    const label_t* xn = x + n * D;
    for (int64_t i = 0; i < D; ++i) {  // labels checked in score
      const int64_t l = static_cast<int64_t>(xn[i]);
      if (l < 0) continue;
      double* c = buf + ps.lay.counts + (i * K + l) * K;
      for (int64_t m = 0; m < K; ++m) c[m] += s[m];
    }
  };
  softmax_rows_in_blocks<KC>(r0, r1, K, score, use);
}

template <typename label_t>
void pass_rows_any(const char* name, const label_t* x, int64_t r0, int64_t r1, const Pass& ps, double* buf) {
  switch (ps.K) {
    case 2: return pass_rows<label_t, 2>(name, x, r0, r1, ps, buf);
    case 3: return pass_rows<label_t, 3>(name, x, r0, r1, ps, buf);
    case 4: return pass_rows<label_t, 4>(name, x, r0, r1, ps, buf);
    case 5: return pass_rows<label_t, 5>(name, x, r0, r1, ps, buf);
    default: return pass_rows<label_t, 0>(name, x, r0, r1, ps, buf);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> hard_evidence_pass(
    const at::Tensor& labels_, const at::Tensor& logp_, const at::Tensor& logpi_, const at::Tensor& log_abstain_,
    bool want_counts, bool want_posterior) {
  const char* name = "deem::hard_evidence_pass";
  TORCH_CHECK(labels_.device().is_cpu() && logp_.device().is_cpu() && logpi_.device().is_cpu() &&
                  log_abstain_.device().is_cpu(),
              name, ": expected CPU tensors");
  const EvidenceArgs ev = evidence_args(name, labels_, logp_, logpi_, log_abstain_);
  const int64_t N = ev.N, D = ev.D, K = ev.K;
  const at::Tensor labels = labels_.contiguous();
  const auto f64 = logp_.options();
  at::Tensor post = at::empty({want_posterior ? N : 0, K}, f64);
  const Layout lay(K, D, want_counts);
  const Pass ps{K, D, ev.lp.data_ptr<double>(), ev.base.data_ptr<double>(), lay, want_counts,
                want_posterior ? post.data_ptr<double>() : nullptr};
  std::vector<double> tot;
  DEEM_DISPATCH_LABELS(labels.scalar_type(), name, [&] {
    const label_t* x = labels.data_ptr<label_t>();
    tot = chunked_reduce(N, lay.size,
                         [&](int64_t r0, int64_t r1, double* buf) { pass_rows_any(name, x, r0, r1, ps, buf); });
  });
  at::Tensor counts = at::empty({want_counts ? K : 0, K, D}, f64);
  if (want_counts) {
    double* c = counts.data_ptr<double>();
    for (int64_t i = 0; i < D; ++i)
      for (int64_t l = 0; l < K; ++l)
        for (int64_t m = 0; m < K; ++m) c[(l * K + m) * D + i] = tot[lay.counts + (i * K + l) * K + m];
  }
  at::Tensor mass = at::empty({K}, f64);
  std::copy(tot.begin() + lay.mass, tot.begin() + lay.mass + K, mass.data_ptr<double>());
  return {counts, mass, at::scalar_tensor(tot[lay.nll], f64), post};
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) { m.impl("hard_evidence_pass", &deem::cpu::hard_evidence_pass); }
