// vb_update, shared by the CPU and CUDA kernels: the argument checks (one set of messages), the
// update of one confusion column, and the finish (class weights, learned priors, the bound's KL).
//
// The variational step of solver='bayes' (deem/solvers/bayes.py has the model), from the expected
// counts c (K_l, K_m, D) and class mass (K) of the last pass and the prior x = (diag, off[, vote,
// abstain]) = exp(log_prior):
//   post[l, m, i] = c[l, m, i] + off + diag [l == m]           (Dirichlet posterior of column (i, m))
//   elog[l, m, i] = digamma(post) - digamma(sum_l post)
//   informative (modelled (D) 0/1 given): the rate of voting of voter i under class m is Beta(
//     sum_l c[l, m, i] + vote, max(mass[m] - sum_l c[l, m, i], 0) + abstain), with expected logs
//     (r0, r1); elog_p = elog + w_i r0 and elog_abstain[i, m] = w_i r1 (w_i = modelled[i]).
//   elog_pi = digamma(mass + class_prior) - digamma(sum);
//   learn: x maximizes the prior's part of the bound (vb_math.h), from x, within [lo, hi]^2;
//   kl = KL(posteriors || priors at the new x), summed: the confusions', the class weights' and the
//     rates' of the modelled voters -- each written as a per-column part that needs no prior
//     (lgamma(sum post) - sum lgamma(post) + sum post * elog) minus the prior times the summed elogs,
//     plus the prior's normalizers, so one pass over the columns serves whatever prior is learned.
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>

#include "common/vb_math.h"

namespace deem {

struct VbArgs {
  int64_t K, D;
  bool informative;
};

inline VbArgs vb_args(const char* name, const at::Tensor& counts, const at::Tensor& mass, const at::Tensor& log_prior,
                      const at::Tensor& modelled, double class_prior, double lo, double hi) {
  TORCH_CHECK(counts.dim() == 3 && counts.size(0) == counts.size(1) && counts.size(0) >= 1, name,
              ": counts must have shape (K, K, D), got ", counts.sizes());
  const int64_t K = counts.size(0), D = counts.size(2);
  TORCH_CHECK(mass.dim() == 1 && mass.size(0) == K, name, ": mass must have shape (", K, "), got ", mass.sizes());
  TORCH_CHECK(log_prior.dim() == 1 && (log_prior.size(0) == 2 || log_prior.size(0) == 4), name,
              ": log_prior must hold (diag, off) or (diag, off, vote, abstain), got shape ", log_prior.sizes());
  const bool informative = log_prior.size(0) == 4;
  TORCH_CHECK(modelled.dim() == 1 && modelled.size(0) == (informative ? D : 0), name, ": modelled must have shape (",
              informative ? D : 0, ") with a ", informative ? "four" : "two", "-number prior, got ", modelled.sizes());
  for (const at::Tensor* t : {&counts, &mass, &log_prior, &modelled})
    TORCH_CHECK(t->scalar_type() == at::kDouble, name, ": counts, mass, log_prior and modelled must be float64, got ",
                t->scalar_type());
  TORCH_CHECK(class_prior > 0, name, ": class_prior must be positive, got ", class_prior);
  TORCH_CHECK(lo > 0 && lo <= hi, name, ": the prior's bounds must satisfy 0 < lo <= hi, got [", lo, ", ", hi, "]");
  return {K, D, informative};
}

// Index of the per-column statistics after the K * K summed elogs E[l * K + m].
enum VbStat { kRate0 = 0, kRate1 = 1, kConfKl = 2, kRateKl = 3, kVbStats = 4 };

// Column (i, m): writes elog_p[l, m, i] for every l (and elog_abstain[i, m] when informative), calls
// add_elog(l, elog) with the confusion part of each, and adds into stat[kVbStats] its rate logs and KL
// parts (the KL parts only when want_kl). x: (diag, off, vote, abstain); w < 0: not informative.
// The CUDA kernel runs it per column; the CPU kernel runs the same math four voters at a time
// (cpu/vb_update.cpp, vb_columns): a change here must be made there too (tests/test_vb_update.py holds
// both to the twin at 1e-12).
template <class AddElog>
DEEM_HD void vb_column(const double* counts, double* elog_p, double* elog_abstain, int64_t D, int64_t K, int64_t i,
                       int64_t m, const double* x, double mass_m, double w, bool want_kl, const AddElog& add_elog,
                       double* stat) {
  double total = 0.0, present = 0.0;
  for (int64_t l = 0; l < K; ++l) {
    const double c = counts[(l * K + m) * D + i];
    present += c;
    total += c + x[1] + (l == m ? x[0] : 0.0);
  }
  double lg_total = 0.0;
  const double psi_total = vb::digamma_lgamma(total, want_kl ? &lg_total : nullptr);
  double kl = lg_total;
  double r0w = 0.0;
  if (w >= 0) {
    const double vote = present + x[2];
    const double abstain = (mass_m - present > 0 ? mass_m - present : 0.0) + x[3];
    double lg_s = 0.0, lg_v = 0.0, lg_a = 0.0;
    const double ps = vb::digamma_lgamma(vote + abstain, want_kl ? &lg_s : nullptr);
    const double r0 = vb::digamma_lgamma(vote, want_kl ? &lg_v : nullptr) - ps;
    const double r1 = vb::digamma_lgamma(abstain, want_kl ? &lg_a : nullptr) - ps;
    r0w = r0 * w;
    elog_abstain[i * K + m] = r1 * w;
    stat[kRate0] += r0w;
    stat[kRate1] += r1 * w;
    if (want_kl && w > 0) stat[kRateKl] += lg_s - lg_v - lg_a + vote * r0 + abstain * r1;
  }
  for (int64_t l = 0; l < K; ++l) {
    const int64_t at = (l * K + m) * D + i;
    const double post = counts[at] + x[1] + (l == m ? x[0] : 0.0);
    double lg = 0.0;
    const double psi = vb::digamma_lgamma(post, want_kl ? &lg : nullptr);
    const double e = psi - psi_total;
    add_elog(l, e);
    elog_p[at] = e + r0w;
    if (want_kl) kl += post * e - lg;
  }
  if (want_kl) stat[kConfKl] += kl;
}

// After the columns: sums = (E (K * K), the kVbStats statistics) over every voter, n_keep the modelled
// voters. Writes elog_pi (K), the new prior x_out (its log in log_out) and kl (NaN unless want_kl).
DEEM_HD void vb_finish(const double* sums, int64_t K, int64_t D, double n_keep, const double* mass, double class_prior,
                       double lo, double hi, bool learn, bool want_kl, bool informative, const double* x_in,
                       const double* log_in, double* log_out, double* elog_pi, double* kl_out) {
  double total = 0.0;
  for (int64_t m = 0; m < K; ++m) total += mass[m] + class_prior;
  double lg_total = 0.0;
  const double psi_total = vb::digamma_lgamma(total, &lg_total);
  double kl_pi = lg_total + K * vb::lgamma_pos(class_prior) - vb::lgamma_pos(K * class_prior);
  for (int64_t m = 0; m < K; ++m) {
    const double post = mass[m] + class_prior;
    double lg = 0.0;
    elog_pi[m] = vb::digamma_lgamma(post, &lg) - psi_total;
    kl_pi += (post - class_prior) * elog_pi[m] - lg;
  }
  const double* E = sums;
  const double* stat = sums + K * K;
  double trace = 0.0, sum = 0.0;
  for (int64_t l = 0; l < K; ++l)
    for (int64_t m = 0; m < K; ++m) {
      sum += E[l * K + m];
      if (l == m) trace += E[l * K + m];
    }
  const int n_prior = informative ? 4 : 2;
  double x[4];
  for (int p = 0; p < n_prior; ++p) x[p] = x_in[p];
  const vb::ConfusionPrior conf{static_cast<double>(D), static_cast<double>(K), trace, sum};
  const vb::RatePrior rate{n_keep * K, stat[kRate0], stat[kRate1]};
  if (learn) {
    vb::newton_box(conf, x, lo, hi);
    if (informative && n_keep > 0) vb::newton_box(rate, x + 2, lo, hi);
  }
  for (int p = 0; p < n_prior; ++p) log_out[p] = x[p] == x_in[p] ? log_in[p] : log(x[p]);
  if (!want_kl) {
    *kl_out = NAN;
    return;
  }
  double kl = kl_pi + stat[kConfKl] - (x[1] * sum + x[0] * trace) + conf.log_normalizers(x);
  if (informative && n_keep > 0)
    kl += stat[kRateKl] - (x[2] * stat[kRate0] + x[3] * stat[kRate1]) + rate.log_normalizers(x + 2);
  *kl_out = kl;
}

}  // namespace deem
