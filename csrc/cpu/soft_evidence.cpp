// soft_evidence_pass: one E-step pass of the virtual-evidence Dawid–Skene model
// (deem/solvers/soft_evidence.py) over soft labels v (N, K_l, D), fused: per row,
//   a[m, i]  = sum_l v[l, i] P[l, m, i]                  (P = exp(logp), present i only)
//   s[m]     = log pi[m] + sum_{i present} log a[m, i]  -> q = softmax(s), nll -= logsumexp(s)
//   R[l,m,i] += v[l, i] q[m] / a[m, i]                  -> counts = P * R
// with a clamped at 1e-300 like the twin. A classifier is present on a row when
// its column has positive mass; rows with none present get the prior as their
// posterior and add nothing to the sums. No (N, K, D) temporary: each row is read
// once, in its own dtype, and accumulated in double.
//
// sum_i log a[m, i] is kept as a mantissa/exponent pair (the product renormalized
// by its binary exponent at every factor, one log per class at the end) rather
// than D*K logs. The sums run in the fixed chunking of stats.h (bitwise
// independent of the thread count).
#include <bit>

#include "cpu/simd.h"
#include "cpu/stats.h"

namespace deem {
namespace cpu {
namespace {

constexpr double kTiny = 1e-300;
constexpr double kLn2 = 0.69314718055994530942;

// Splits x (positive, normal) into m in [1, 2) and adds its binary exponent to e.
inline double split_exponent(double x, int64_t& e) {
  const uint64_t bits = std::bit_cast<uint64_t>(x);
  e += static_cast<int64_t>((bits >> 52) & 0x7FF) - 1023;
  return std::bit_cast<double>((bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
}

struct Layout {
  int64_t counts, mass, nll, rows, size;
  Layout(int64_t K, int64_t D, bool want_counts) {
    counts = 0;
    mass = want_counts ? K * K * D : 0;
    nll = mass + K;
    rows = nll + 1;
    size = rows + 1;
  }
};

// Everything a pass reads besides the rows: P = exp(logp) (K_l, K_m, D), log prior, prior
// probabilities, where the sums go in a buffer, and the posterior output (or null).
struct Pass {
  int64_t K, D;
  const double *P, *logpi, *prior;
  Layout lay;
  bool want_counts;
  double* post;
};

template <typename T>
inline __attribute__((always_inline)) void pass_rows_impl(const T* v, int64_t r0, int64_t r1, const Pass& ps,
                                                          double* buf) {
  const int64_t K = ps.K, D = ps.D;
  const double *P = ps.P, *logpi = ps.logpi, *prior = ps.prior;
  const Layout& lay = ps.lay;
  const bool want_counts = ps.want_counts;
  double* post = ps.post;
  std::vector<double> row(K * D), a(K * D), s(K), q(K);
  std::vector<int64_t> ex(K);
  std::vector<unsigned char> present(D);
  for (int64_t n = r0; n < r1; ++n) {
    const T* vn = v + n * K * D;
    for (int64_t li = 0; li < K * D; ++li) row[li] = static_cast<double>(vn[li]);
    bool any = false;
    for (int64_t i = 0; i < D; ++i) {
      double mass = 0.0;
      for (int64_t l = 0; l < K; ++l) mass += row[l * D + i];
      present[i] = mass > 0.0;
      any = any || present[i];
    }
    std::fill(a.begin(), a.end(), 0.0);
    for (int64_t l = 0; l < K; ++l) {
      const double* vl = row.data() + l * D;
      for (int64_t m = 0; m < K; ++m) {
        const double* p = P + (l * K + m) * D;
        double* am = a.data() + m * D;
        for (int64_t i = 0; i < D; ++i) am[i] += vl[i] * p[i];
      }
    }
    for (int64_t m = 0; m < K; ++m) {
      double* am = a.data() + m * D;
      double prod = 1.0;
      int64_t e = 0;
      for (int64_t i = 0; i < D; ++i) {
        if (!present[i]) continue;
        am[i] = std::max(am[i], kTiny);
        prod = split_exponent(prod * am[i], e);
      }
      s[m] = logpi[m] + std::log(prod) + static_cast<double>(e) * kLn2;
    }
    std::copy(s.begin(), s.end(), q.begin());
    const double lse = softmax_in_place(q.data(), K);
    if (post) {
      if (any) {
        for (int64_t m = 0; m < K; ++m) post[n * K + m] = q[m];
      } else {  // no evidence: the class prior
        for (int64_t m = 0; m < K; ++m) post[n * K + m] = prior[m];
      }
    }
    if (!any) continue;
    buf[lay.nll] -= lse;
    buf[lay.rows] += 1.0;
    for (int64_t m = 0; m < K; ++m) buf[lay.mass + m] += q[m];
    if (!want_counts) continue;
    // ratio r[m, i] = q[m] / a[m, i] in a (0 where absent), then R[l, m, i] += v[l, i] r[m, i].
    for (int64_t m = 0; m < K; ++m) {
      double* am = a.data() + m * D;
      for (int64_t i = 0; i < D; ++i) am[i] = present[i] ? q[m] / am[i] : 0.0;
    }
    for (int64_t l = 0; l < K; ++l) {
      const double* vl = row.data() + l * D;
      for (int64_t m = 0; m < K; ++m) {
        const double* rm = a.data() + m * D;
        double* out = buf + lay.counts + (l * K + m) * D;
        for (int64_t i = 0; i < D; ++i) out[i] += vl[i] * rm[i];
      }
    }
  }
}

// Non-template entry points, cloned for AVX2 and the baseline ISA (the row loops vectorize).
DEEM_CLONES void pass_rows(const float* v, int64_t r0, int64_t r1, const Pass& ps, double* buf) {
  pass_rows_impl(v, r0, r1, ps, buf);
}
DEEM_CLONES void pass_rows(const double* v, int64_t r0, int64_t r1, const Pass& ps, double* buf) {
  pass_rows_impl(v, r0, r1, ps, buf);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> soft_evidence_pass(
    const at::Tensor& v_, const at::Tensor& logp_, const at::Tensor& logpi_, bool want_counts, bool want_posterior) {
  const char* name = "deem::soft_evidence_pass";
  TORCH_CHECK(v_.device().is_cpu() && logp_.device().is_cpu() && logpi_.device().is_cpu(), name,
              ": expected CPU tensors");
  TORCH_CHECK(v_.dim() == 3, name, ": v must have shape (N, K, D), got ", v_.sizes());
  TORCH_CHECK(v_.scalar_type() == at::kFloat || v_.scalar_type() == at::kDouble, name,
              ": v must be float32 or float64, got ", v_.scalar_type());
  const int64_t N = v_.size(0), K = v_.size(1), D = v_.size(2);
  TORCH_CHECK(K >= 1 && D >= 1, name, ": v must have K >= 1 classes and D >= 1 classifiers, got ", v_.sizes());
  TORCH_CHECK(logp_.dim() == 3 && logp_.size(0) == K && logp_.size(1) == K && logp_.size(2) == D, name,
              ": logp must have shape (K, K, D) = (", K, ", ", K, ", ", D, "), got ", logp_.sizes());
  TORCH_CHECK(logpi_.dim() == 1 && logpi_.size(0) == K, name, ": logpi must have shape (K,) = (", K, "), got ",
              logpi_.sizes());
  TORCH_CHECK(logp_.scalar_type() == at::kDouble && logpi_.scalar_type() == at::kDouble, name,
              ": logp and logpi must be float64");
  const at::Tensor v = v_.contiguous();
  const at::Tensor P = logp_.exp().contiguous();
  const at::Tensor logpi = logpi_.contiguous();
  const at::Tensor prior = at::softmax(logpi, 0);  // the posterior of a row without evidence
  const auto f64 = v.options().dtype(at::kDouble);
  at::Tensor post = want_posterior ? at::empty({N, K}, f64) : at::empty({0, K}, f64);
  const Layout lay(K, D, want_counts);
  const Pass ps{K, D, P.data_ptr<double>(), logpi.data_ptr<double>(), prior.data_ptr<double>(), lay, want_counts,
                want_posterior ? post.data_ptr<double>() : nullptr};
  std::vector<double> tot;
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "deem", [&] {
    const scalar_t* vp = v.data_ptr<scalar_t>();
    tot = chunked_reduce(N, lay.size, [&](int64_t r0, int64_t r1, double* buf) { pass_rows(vp, r0, r1, ps, buf); });
  });
  at::Tensor counts = at::empty({want_counts ? K : 0, K, D}, f64);
  if (want_counts) {
    double* c = counts.data_ptr<double>();
    const double* p = P.data_ptr<double>();
    for (int64_t k = 0; k < K * K * D; ++k) c[k] = p[k] * tot[lay.counts + k];
  }
  at::Tensor mass = at::empty({K}, f64);
  std::copy(tot.begin() + lay.mass, tot.begin() + lay.mass + K, mass.data_ptr<double>());
  return {counts, mass, at::scalar_tensor(tot[lay.nll], f64), at::scalar_tensor(tot[lay.rows], f64), post};
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) { m.impl("soft_evidence_pass", &deem::cpu::soft_evidence_pass); }
