// vb_update on the CPU (the step and its outputs: common/vb.h): one pass over the D * K confusion
// columns, voters in chunked_reduce's fixed groups (bitwise the same sums for any thread count), then
// the finish on the host. O(D * K * K) time; no buffer beyond the outputs and 64 partials.
#include "common/vb.h"
#include "cpu/stats.h"

namespace deem {
namespace cpu {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> vb_update(
    const at::Tensor& counts_, const at::Tensor& mass_, const at::Tensor& log_prior_, const at::Tensor& modelled_,
    double class_prior, double lo, double hi, bool learn, bool want_kl) {
  const char* name = "deem::vb_update";
  for (const at::Tensor* t : {&counts_, &mass_, &log_prior_, &modelled_})
    TORCH_CHECK(t->device().is_cpu(), name, ": expected CPU tensors");
  const VbArgs a = vb_args(name, counts_, mass_, log_prior_, modelled_, class_prior, lo, hi);
  const int64_t K = a.K, D = a.D, KK = K * K;
  const at::Tensor counts = counts_.contiguous(), mass = mass_.contiguous(), log_prior = log_prior_.contiguous(),
                   modelled = modelled_.contiguous();
  const auto f64 = counts.options();
  at::Tensor elog_p = at::empty({K, K, D}, f64);
  at::Tensor elog_abstain = at::empty({a.informative ? D : 0, K}, f64);
  const double* lp = log_prior.data_ptr<double>();
  double x[4] = {0.0, 0.0, 0.0, 0.0};
  for (int64_t p = 0; p < log_prior.size(0); ++p) x[p] = std::exp(lp[p]);
  const double* w = a.informative ? modelled.data_ptr<double>() : nullptr;
  double n_keep = 0.0;
  for (int64_t i = 0; i < (a.informative ? D : 0); ++i) {
    TORCH_CHECK(w[i] == 0.0 || w[i] == 1.0, name, ": modelled must hold 0 or 1, got ", w[i], " at voter ", i);
    n_keep += w[i];
  }
  const double* c = counts.data_ptr<double>();
  const double* ms = mass.data_ptr<double>();
  double* ep = elog_p.data_ptr<double>();
  double* ea = a.informative ? elog_abstain.data_ptr<double>() : nullptr;
  const VbZero zero(x);  // a voter never gave most labels of a sparse crowd: their cells are 0
  const std::vector<double> sums = chunked_reduce(D, KK + kVbStats, [&](int64_t i0, int64_t i1, double* buf) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t m = 0; m < K; ++m) {
        auto add = [&](int64_t l, double e) { buf[l * K + m] += e; };
        vb_column(c, ep, ea, D, K, i, m, x, ms[m], w != nullptr ? w[i] : -1.0, want_kl, add, buf + KK, &zero);
      }
  });
  at::Tensor elog_pi = at::empty({K}, f64);
  at::Tensor log_out = at::empty_like(log_prior);
  at::Tensor kl = at::empty({}, f64);
  vb_finish(sums.data(), K, D, n_keep, ms, class_prior, lo, hi, learn, want_kl, a.informative, x, lp,
            log_out.data_ptr<double>(), elog_pi.data_ptr<double>(), kl.data_ptr<double>());
  return {elog_p, elog_pi, elog_abstain, log_out, kl};
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) { m.impl("vb_update", &deem::cpu::vb_update); }
