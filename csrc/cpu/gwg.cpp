// gwg_steps: n_steps Gibbs-with-Gradients Metropolis-Hastings steps per chain,
// in place. One pass per chain; the hidden logits, the gradient g and the
// proposal weights at the current state are cached between steps and only the
// proposal state is evaluated (its hidden logits updated incrementally); on
// acceptance the two states' buffers are swapped.
//
// Layout: every per-(i, l) array is stored l-major, a[l * Dp + i], with D padded
// to Dp (a multiple of 8) so the gradient, the selection of g[i, x_i], the
// logits, their max and the exps are whole-vector loops. The inverse CDF is
// taken in the spec's flattened order (i ascending, then l) with a two-level
// running sum (row sums s_i = sum_l e[i, l] in double, the running sum over
// rows, then within the chosen row): the same selection as the spec's flat
// running sum up to the last bits of rounding.
#include "cpu/chain_op.h"
#include "cpu/gwg_select.h"
#include "cpu/simd.h"

namespace deem {
namespace cpu {
namespace {

struct StateVals {
  double f;    // f(x) = -F(x)
  double tot;  // sum of the proposal weights e (running sum over rows)
  double lse;  // logsumexp of the proposal logits = max + log(tot)
};

// Per-call constants (padded, l-major).
template <typename T>
struct Model {
  int64_t K, D, H, HK, Dp;
  const T* Wt;  // (D, K, H, K): hidden-logit contribution of visible (i, l)
  const T* Wg;  // (H*K, K, Dp): Wg[jm][l][i] = W[l, m, i, j], zero padded
  const T* bv;  // (K, Dp): b_v[i, l], zero padded
  const T* bh;  // (H*K)
};

// One chain's scratch: current / proposal buffers and the state masks.
template <typename T>
struct Buffers {
  T *L, *Lp, *P, *g, *gp, *e, *ep;
  double *s, *sp;  // row sums of e (Dp)
  // Lane masks (all ones / zero, integers as wide as T), read as vectors:
  typename Vec<T>::lane* xm;  // (K, Dp): x_i == l
  typename Vec<T>::lane* pm;  // (Dp): i present
};

// From the hidden logits L and masks of state x: f, P (scratch), g = df/dx,
// e = exp(logit - max) (0 where excluded: missing i, l == x_i, padding), s.
template <typename T>
static inline __attribute__((always_inline)) StateVals eval_state(const Model<T>& M, const Buffers<T>& B, const T* L,
                                                                   T* g, T* e, double* s) {
  typedef VT<T> v;
  typedef VI<T> vi;
  constexpr int NL = Vec<T>::N;
  const int64_t K = M.K, D = M.D, Dp = M.Dp, NV = Dp / NL;
  double f = softmax_rows(L, B.P, M.H, K);
  const T* P = B.P;
  const v ninf = v{} - std::numeric_limits<T>::infinity();
  v mxv = ninf;
  v fbv = v{};
  for (int64_t q = 0; q < NV; ++q) {
    // g[l, i] = b_v + sum_jm P[jm] Wg[jm, l, i]; gx[i] = g[i, x_i]; bvx[i] = b_v[i, x_i]
    vi gx = vi{}, bvx = vi{};
    for (int64_t l = 0; l < K; ++l) {
      const int64_t off = l * Dp + q * NL;
      const v bl = vload<v>(M.bv + off);
      v acc = bl;
      for (int64_t jm = 0; jm < M.HK; ++jm) acc += P[jm] * vload<v>(M.Wg + jm * K * Dp + off);
      vstore(g + off, acc);
      const vi m = vload<vi>(B.xm + off);
      gx |= (vi)acc & m;
      bvx |= (vi)bl & m;
    }
    fbv += (v)bvx;
    const vi pm = vload<vi>(B.pm + q * NL);
    for (int64_t l = 0; l < K; ++l) {
      const int64_t off = l * Dp + q * NL;
      const vi elig = pm & ~vload<vi>(B.xm + off);
      const v lg = (vload<v>(g + off) - (v)gx) * T(0.5);
      const v x = (v)(((vi)lg & elig) | ((vi)ninf & ~elig));
      vstore(e + off, x);
      const vi gt = x > mxv;
      mxv = (v)(((vi)x & gt) | ((vi)mxv & ~gt));
    }
  }
  T mx = mxv[0];
  for (int q = 1; q < NL; ++q) mx = mxv[q] > mx ? mxv[q] : mx;
  for (int q = 0; q < NL; ++q) f += static_cast<double>(fbv[q]);
  (void)D;
  for (int64_t c = 0; c < K * Dp; c += NL) vstore(e + c, vexp(vload<v>(e + c) - mx));
  for (int64_t i = 0; i < Dp; ++i) s[i] = static_cast<double>(e[i]);
  for (int64_t l = 1; l < K; ++l)
    for (int64_t i = 0; i < Dp; ++i) s[i] += static_cast<double>(e[l * Dp + i]);
  double tot = 0.0;
  for (int64_t i = 0; i < D; ++i) tot += s[i];
  return {f, tot, static_cast<double>(mx) + std::log(tot)};
}

template <typename T>
static inline __attribute__((always_inline)) void set_mask(const Buffers<T>& B, int64_t Dp, int64_t l, int64_t i,
                                                          bool on) {
  B.xm[l * Dp + i] = on ? -1 : 0;
}

// n_steps GWG steps of chain b, state x (int32, -1 = missing). Returns accepted count.
template <typename T>
static inline __attribute__((always_inline)) int32_t run_chain_impl(const Model<T>& M, Buffers<T> B, int32_t* x,
                                                                     int64_t b, int64_t n_steps, int64_t seed,
                                                                     int64_t offset) {
  const int64_t K = M.K, D = M.D, HK = M.HK, Dp = M.Dp;
  int64_t last = -1;
  for (int64_t i = 0; i < D; ++i)
    if (x[i] >= 0) last = i;
  if (last < 0 || K == 1 || n_steps == 0) return 0;
  for (int64_t q = 0; q < (K + 1) * Dp; ++q) B.xm[q] = 0;
  for (int64_t i = 0; i < D; ++i) {
    if (x[i] < 0) continue;
    B.pm[i] = -1;
    set_mask(B, Dp, x[i], i, true);
  }
  for (int64_t c = 0; c < HK; ++c) B.L[c] = M.bh[c];
  for (int64_t i = 0; i < D; ++i) {
    if (x[i] < 0) continue;
    const T* w = M.Wt + (i * K + x[i]) * HK;
    for (int64_t c = 0; c < HK; ++c) B.L[c] += w[c];
  }
  StateVals cur = eval_state(M, B, B.L, B.g, B.e, B.s);
  int32_t n_acc = 0;
  for (int64_t st = 0; st < n_steps; ++st) {
    const Philox4 r = philox_draw(static_cast<uint64_t>(seed), 0u, static_cast<uint32_t>(b),
                                  static_cast<uint64_t>(offset) + static_cast<uint64_t>(st));
    const double u1 = philox_uniform(r.v[0]);
    const double u2 = philox_uniform(r.v[1]);
    // Inverse CDF in (i, l) order (gwg_select.h); missing voters' rows sum to 0 and are never picked.
    int64_t i, l;
    gwg_select(u1 * cur.tot, B.s, D, K, last, [&](int64_t r, int64_t k) { return B.e[k * Dp + r]; },
               [&](int64_t r) { return x[r]; }, i, l);
    const int32_t xi = x[i];
    const double lq_fwd = static_cast<double>((B.g[l * Dp + i] - B.g[xi * Dp + i]) * T(0.5)) - cur.lse;
    const T* wo = M.Wt + (i * K + xi) * HK;
    const T* wn = M.Wt + (i * K + l) * HK;
    for (int64_t k = 0; k < HK; ++k) B.Lp[k] = B.L[k] - wo[k] + wn[k];
    x[i] = static_cast<int32_t>(l);
    set_mask(B, Dp, xi, i, false);
    set_mask(B, Dp, l, i, true);
    const StateVals prop = eval_state(M, B, B.Lp, B.gp, B.ep, B.sp);
    const double lq_rev = static_cast<double>((B.gp[xi * Dp + i] - B.gp[l * Dp + i]) * T(0.5)) - prop.lse;
    const double log_alpha = prop.f - cur.f + lq_rev - lq_fwd;
    if (std::log(u2) < log_alpha) {
      ++n_acc;
      std::swap(B.L, B.Lp);
      std::swap(B.g, B.gp);
      std::swap(B.e, B.ep);
      std::swap(B.s, B.sp);
      cur = prop;
    } else {
      x[i] = xi;
      set_mask(B, Dp, l, i, false);
      set_mask(B, Dp, xi, i, true);
    }
  }
  return n_acc;
}

// Non-template entry points, cloned for AVX2 and the baseline ISA.
DEEM_CLONES int32_t run_chain(const Model<float>& M, Buffers<float> B, int32_t* x, int64_t b, int64_t n_steps,
                              int64_t seed, int64_t offset) {
  return run_chain_impl(M, B, x, b, n_steps, seed, offset);
}
DEEM_CLONES int32_t run_chain(const Model<double>& M, Buffers<double> B, int32_t* x, int64_t b, int64_t n_steps,
                              int64_t seed, int64_t offset) {
  return run_chain_impl(M, B, x, b, n_steps, seed, offset);
}

// Every chain (labels already validated) in parallel, one thread's scratch per range of chains.
template <typename T, typename label_t>
void gwg_kernel(label_t* chains, int64_t Bn, const Model<T>& M, int64_t n_steps, int64_t seed, int64_t offset,
                int32_t* accepted) {
  const int64_t K = M.K, D = M.D, HK = M.HK, Dp = M.Dp;
  at::parallel_for(0, Bn, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> scratch(3 * HK + 4 * K * Dp);
    std::vector<double> sbuf(2 * Dp);
    std::vector<typename Vec<T>::lane> masks((K + 1) * Dp);
    Buffers<T> B;
    B.L = scratch.data();
    B.Lp = B.L + HK;
    B.P = B.Lp + HK;
    B.g = B.P + HK;
    B.gp = B.g + K * Dp;
    B.e = B.gp + K * Dp;
    B.ep = B.e + K * Dp;
    B.s = sbuf.data();
    B.sp = B.s + Dp;
    B.xm = masks.data();
    B.pm = B.xm + K * Dp;
    std::vector<int32_t> xs(D);
    for (int64_t b = b0; b < b1; ++b) {
      label_t* xb = chains + b * D;
      for (int64_t i = 0; i < D; ++i) xs[i] = static_cast<int32_t>(xb[i]);
      accepted[b] = run_chain(M, B, xs.data(), b, n_steps, seed, offset);
      for (int64_t i = 0; i < D; ++i) xb[i] = static_cast<label_t>(xs[i]);
    }
  });
}

at::Tensor gwg_steps(at::Tensor& chains, const at::Tensor& W, const at::Tensor& b_v, const at::Tensor& b_h,
                     int64_t n_steps, int64_t seed, int64_t offset) {
  return run_chain_op("deem::gwg_steps", chains, W, b_v, b_h, n_steps,
                      [&]<typename T, typename label_t>(const Dims& d, const at::Tensor& Wc, const at::Tensor& b_vc,
                                                        const at::Tensor& b_hc, label_t* x, int64_t B, int32_t* acc) {
    const int64_t K = d.K, D = d.D, H = d.H, HK = H * K, Dp = (D + 7) / 8 * 8;
    const T* w = Wc.data_ptr<T>();
    const T* bvp = b_vc.data_ptr<T>();
    const std::vector<T> Wt = w_il_jm(w, d);
    std::vector<T> Wg(HK * K * Dp, T(0)), bv(K * Dp, T(0));
    for (int64_t l = 0; l < K; ++l)
      for (int64_t m = 0; m < K; ++m)
        for (int64_t i = 0; i < D; ++i) {
          bv[l * Dp + i] = bvp[i * K + l];
          for (int64_t j = 0; j < H; ++j) Wg[((j * K + m) * K + l) * Dp + i] = w[((l * K + m) * D + i) * H + j];
        }
    const Model<T> M{K, D, H, HK, Dp, Wt.data(), Wg.data(), bv.data(), b_hc.data_ptr<T>()};
    gwg_kernel<T, label_t>(x, B, M, n_steps, seed, offset, acc);
  });
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) { m.impl("gwg_steps", &deem::cpu::gwg_steps); }
