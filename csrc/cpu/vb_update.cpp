// vb_update on the CPU (the step and its outputs: common/vb.h): one pass over the D * K confusion
// columns, voters in chunked_reduce's fixed groups (bitwise the same sums for any thread count), then
// the finish on the host. O(D * K * K) time; no buffer beyond the outputs and 64 partials.
// The columns are common/vb.h's vb_column four voters at a time (vdigamma.h; keep the two alike): the digammas and
// lgammas are the whole cost of the step, and one vector of them costs about what one scalar did.
#include "common/vb.h"
#include "cpu/stats.h"
#include "cpu/vdigamma.h"

namespace deem {
namespace cpu {

struct VbColumns {
  const double* counts;  // (K_l, K_m, D)
  double* elog_p;        // (K_l, K_m, D)
  double* elog_abstain;  // (D, K) or null
  int64_t D, K;
  const double* x;     // (diag, off, vote, abstain)
  const double* mass;  // (K)
  const double* w;     // (D) 0/1, or null: not informative
  bool want_kl;
};

// vb_column for voters [i0, i1) and every class, lanes = four consecutive voters: writes their elogs
// and adds into buf, as vb_column's add_elog and stat, the lanes' sums (lane 0 to 3, in that order).
// Lanes past i1 compute on zero counts and are neither stored nor summed.
DEEM_CLONES void vb_columns(const VbColumns& a, int64_t i0, int64_t i1, double* buf) {
  typedef Vec<double>::v v;
  typedef Vec<double>::vi vi;
  constexpr int64_t NL = Vec<double>::N;
  const int64_t K = a.K, D = a.D, KK = K * K, n_acc = KK + kVbStats;
  std::vector<double> acc_buf(static_cast<size_t>(n_acc * NL), 0.0);
  double* acc = acc_buf.data();
  auto add = [&](int64_t k, vi valid, v e) { vstore(acc + k * NL, vload<v>(acc + k * NL) + vselect(valid, e, v{})); };
  const v x0 = v{} + a.x[0], x1 = v{} + a.x[1], x2 = v{} + a.x[2], x3 = v{} + a.x[3];
  const vi lane = {0, 1, 2, 3};
  for (int64_t i = i0; i < i1; i += NL) {
    const int64_t nv = std::min<int64_t>(NL, i1 - i);
    const vi valid = lane < nv;
    auto load = [&](const double* p) {
      if (nv == NL) return vload<v>(p);
      v t = v{};
      for (int64_t j = 0; j < nv; ++j) t[j] = p[j];
      return t;
    };
    auto store = [&](double* p, v t) {
      if (nv == NL) return vstore(p, t);
      for (int64_t j = 0; j < nv; ++j) p[j] = t[j];
    };
    const v wv = a.w != nullptr ? load(a.w + i) : v{};
    for (int64_t m = 0; m < K; ++m) {
      v total = v{}, present = v{};
      for (int64_t l = 0; l < K; ++l) {
        const v c = load(a.counts + (l * K + m) * D + i);
        present += c;
        total += c + x1 + (l == m ? x0 : v{});
      }
      v lg_total = v{};
      const v psi_total = vdigamma_lgamma(total, a.want_kl, &lg_total);
      v kl = lg_total, r0w = v{};
      if (a.w != nullptr) {
        const v rest = a.mass[m] - present;
        const v vote = present + x2, abstain = vselect(rest > 0.0, rest, v{}) + x3;
        v lg_s = v{}, lg_v = v{}, lg_a = v{};
        const v ps = vdigamma_lgamma(vote + abstain, a.want_kl, &lg_s);
        const v r0 = vdigamma_lgamma(vote, a.want_kl, &lg_v) - ps;
        const v r1 = vdigamma_lgamma(abstain, a.want_kl, &lg_a) - ps;
        r0w = r0 * wv;
        const v r1w = r1 * wv;
        for (int64_t j = 0; j < nv; ++j) a.elog_abstain[(i + j) * K + m] = r1w[j];
        add(KK + kRate0, valid, r0w);
        add(KK + kRate1, valid, r1w);
        if (a.want_kl) add(KK + kRateKl, valid & (wv > 0.0), lg_s - lg_v - lg_a + vote * r0 + abstain * r1);
      }
      for (int64_t l = 0; l < K; ++l) {
        const int64_t at = (l * K + m) * D + i;
        const v post = load(a.counts + at) + x1 + (l == m ? x0 : v{});
        v lg = v{};
        const v e = vdigamma_lgamma(post, a.want_kl, &lg) - psi_total;
        add(l * K + m, valid, e);
        store(a.elog_p + at, e + r0w);
        if (a.want_kl) kl += post * e - lg;
      }
      if (a.want_kl) add(KK + kConfKl, valid, kl);
    }
  }
  for (int64_t k = 0; k < n_acc; ++k) {
    const double* p = acc + k * NL;
    buf[k] += ((p[0] + p[1]) + p[2]) + p[3];
  }
}

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
  const VbColumns cols{c, ep, ea, D, K, x, ms, w, want_kl};
  const std::vector<double> sums = chunked_reduce(
      D, KK + kVbStats, [&](int64_t i0, int64_t i1, double* buf) { vb_columns(cols, i0, i1, buf); });
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
