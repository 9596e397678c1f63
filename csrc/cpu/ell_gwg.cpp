// ell_gwg_steps: gwg_steps (csrc/cpu/gwg.cpp) on padded rows (cpu/ell.h), in place: a chain reads
// and moves its n present slots only, O(n * K * H * K) a step whatever D is.
//
// The state is kept compact -- row p of every per-(coordinate, class) array is the p-th present
// slot -- and evaluated with gwg.cpp's arithmetic in gwg.cpp's order: the hidden logits summed over
// the present voters in order, the gradient g[p, l] = b_v + sum_jm P[jm] W[l, m, i, j] summed over jm,
// the proposal logits (g[p, l] - g[p, x_p]) / 2 in the parameter dtype, their exps through the same
// vexp, row sums in double, the b_v part of f summed in the lanes gwg.cpp's vectors use (voter
// i % lanes). With a row's voters ascending the inverse CDF walks gwg.cpp's (i, l) order over the
// same numbers, so the chains and acceptance counts are the dense op's on the densified rows.
#include "cpu/ell.h"
#include "cpu/gwg_select.h"
#include "cpu/simd.h"

namespace deem {
namespace cpu {
namespace {

// p[k] = vexp(p[k]) for k < n (entries <= 0 or -inf), a zero-padded tail vector for the rest.
template <typename T>
static inline __attribute__((always_inline)) void vexp_array_impl(T* p, int64_t n) {
  typedef VT<T> v;
  constexpr int NL = Vec<T>::N;
  int64_t k = 0;
  for (; k + NL <= n; k += NL) vstore(p + k, vexp(vload<v>(p + k)));
  if (k < n) {
    T tail[NL];
    for (int q = 0; q < NL; ++q) tail[q] = k + q < n ? p[k + q] : T(0);
    const v t = vexp(vload<v>(tail));
    for (int64_t q = k; q < n; ++q) p[q] = t[q - k];
  }
}
DEEM_CLONES void vexp_array(float* p, int64_t n) { vexp_array_impl(p, n); }
DEEM_CLONES void vexp_array(double* p, int64_t n) { vexp_array_impl(p, n); }

template <typename T>
struct Model {
  int64_t K, H, HK;
  const T* Wt;  // (D, K, H, K): hidden-logit contribution of visible (i, l)
  const T* bv;  // (D, K)
  const T* bh;  // (H*K)
};

// One state's buffers: hidden logits L (HK), gradient g (n, K), proposal weights e (n, K), row sums s (n).
template <typename T>
struct State {
  T *L, *g, *e;
  double* s;
  double f, tot, lse;
};

// f, g, e = exp(logit - max) (0 where l == x_p) and s at the compact state (idx, x) of n slots, from L.
template <typename T>
void eval_state(const Model<T>& M, const int32_t* idx, const int32_t* x, int64_t n, T* P, State<T>& S) {
  const int64_t K = M.K, HK = M.HK;
  constexpr int NL = Vec<T>::N;
  double f = softmax_rows(S.L, P, M.H, K);
  T lanes[NL] = {};
  T mx = -std::numeric_limits<T>::infinity();
  for (int64_t p = 0; p < n; ++p) {
    const int64_t i = idx[p];
    T* g = S.g + p * K;
    for (int64_t l = 0; l < K; ++l) {
      const T* w = M.Wt + (i * K + l) * HK;
      T acc = M.bv[i * K + l];
      for (int64_t c = 0; c < HK; ++c) acc += P[c] * w[c];
      g[l] = acc;
    }
    lanes[i % NL] += M.bv[i * K + x[p]];
    const T gx = g[x[p]];
    T* e = S.e + p * K;
    for (int64_t l = 0; l < K; ++l) {
      e[l] = l == x[p] ? -std::numeric_limits<T>::infinity() : static_cast<T>((g[l] - gx) * T(0.5));
      mx = e[l] > mx ? e[l] : mx;
    }
  }
  for (int q = 0; q < NL; ++q) f += static_cast<double>(lanes[q]);
  for (int64_t k = 0; k < n * K; ++k) S.e[k] = S.e[k] - mx;
  vexp_array(S.e, n * K);
  double tot = 0.0;
  for (int64_t p = 0; p < n; ++p) {
    const T* e = S.e + p * K;
    double s = static_cast<double>(e[0]);
    for (int64_t l = 1; l < K; ++l) s += static_cast<double>(e[l]);
    S.s[p] = s;
    tot += s;
  }
  S.f = f;
  S.tot = tot;
  S.lse = static_cast<double>(mx) + std::log(tot);
}

// n_steps GWG steps of chain b at its n present slots (voters idx, labels x, updated in place).
template <typename T>
int32_t run_chain(const Model<T>& M, State<T> cur, State<T> prop, T* P, const int32_t* idx, int32_t* x, int64_t n,
                  int64_t b, int64_t n_steps, int64_t seed, int64_t offset) {
  const int64_t K = M.K, HK = M.HK;
  if (n == 0 || K == 1 || n_steps == 0) return 0;
  for (int64_t c = 0; c < HK; ++c) cur.L[c] = M.bh[c];
  for (int64_t p = 0; p < n; ++p) {
    const T* w = M.Wt + (static_cast<int64_t>(idx[p]) * K + x[p]) * HK;
    for (int64_t c = 0; c < HK; ++c) cur.L[c] += w[c];
  }
  eval_state(M, idx, x, n, P, cur);
  int32_t n_acc = 0;
  for (int64_t st = 0; st < n_steps; ++st) {
    const Philox4 r = philox_draw(static_cast<uint64_t>(seed), 0u, static_cast<uint32_t>(b),
                                  static_cast<uint64_t>(offset) + static_cast<uint64_t>(st));
    const double u1 = philox_uniform(r.v[0]);
    const double u2 = philox_uniform(r.v[1]);
    // Inverse CDF in (slot, l) order: gwg.cpp's draw over the present coordinates (gwg_select.h).
    int64_t p, l;
    gwg_select(u1 * cur.tot, cur.s, n, K, n - 1, [&](int64_t r, int64_t k) { return cur.e[r * K + k]; },
               [&](int64_t r) { return x[r]; }, p, l);
    const int32_t xp = x[p];
    const int64_t i = idx[p];
    const double lq_fwd = static_cast<double>((cur.g[p * K + l] - cur.g[p * K + xp]) * T(0.5)) - cur.lse;
    const T* wo = M.Wt + (i * K + xp) * HK;
    const T* wn = M.Wt + (i * K + l) * HK;
    for (int64_t c = 0; c < HK; ++c) prop.L[c] = cur.L[c] - wo[c] + wn[c];
    x[p] = static_cast<int32_t>(l);
    eval_state(M, idx, x, n, P, prop);
    const double lq_rev = static_cast<double>((prop.g[p * K + xp] - prop.g[p * K + l]) * T(0.5)) - prop.lse;
    const double log_alpha = prop.f - cur.f + lq_rev - lq_fwd;
    if (std::log(u2) < log_alpha) {
      ++n_acc;
      std::swap(cur, prop);
    } else {
      x[p] = xp;
    }
  }
  return n_acc;
}

at::Tensor ell_gwg_steps(const at::Tensor& voter, at::Tensor& chains, const at::Tensor& W, const at::Tensor& b_v,
                         const at::Tensor& b_h, int64_t n_steps, int64_t seed, int64_t offset) {
  return run_ell_chain_op("deem::ell_gwg_steps", voter, chains, W, b_v, b_h, n_steps,
                          [&]<typename T, typename label_t>(const Dims& d, const T* Wt, const T* bv, const T* bh,
                                                            const int64_t* v, label_t* x, int64_t B, int64_t S,
                                                            int32_t* acc) {
    const int64_t K = d.K, HK = d.HK();
    const Model<T> M{K, d.H, HK, Wt, bv, bh};
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<T> tbuf(3 * HK + 4 * S * K);
      std::vector<double> dbuf(2 * S);
      State<T> cur{tbuf.data(), tbuf.data() + 3 * HK, tbuf.data() + 3 * HK + S * K, dbuf.data(), 0, 0, 0};
      State<T> prop{tbuf.data() + HK, tbuf.data() + 3 * HK + 2 * S * K, tbuf.data() + 3 * HK + 3 * S * K,
                    dbuf.data() + S, 0, 0, 0};
      T* P = tbuf.data() + 2 * HK;
      std::vector<int32_t> idx(S), xs(S), slot(S);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t n = compact_ell_row(v, x, b, S, idx.data(), xs.data(), slot.data());
        acc[b] = run_chain(M, cur, prop, P, idx.data(), xs.data(), n, b, n_steps, seed, offset);
        for (int64_t p = 0; p < n; ++p) x[b * S + slot[p]] = static_cast<label_t>(xs[p]);
      }
    });
  });
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) { m.impl("ell_gwg_steps", &deem::cpu::ell_gwg_steps); }
