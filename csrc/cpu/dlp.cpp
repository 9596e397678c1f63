// dlp_steps: n_steps discrete-Langevin Metropolis-Hastings steps per chain, in
// place (Zhang, Liu & Liu 2022). Each step proposes a new value for every present
// coordinate at once, independently:
//   q_i(l | x) ∝ exp(a[i, l]),  a[i, l] = (g[i, l] - g[i, x_i]) / 2 - [l != x_i] / step_size,
// g = df/dx at x (f = -F), and accepts or rejects the whole move. One pass per
// chain: f, the gradient and the proposal log-probabilities at the current
// state are cached between steps, only the proposal state is evaluated, and an
// accepted move swaps the two states' buffers.
//
// Random numbers (shared with the CUDA kernel and the twin): coordinate i uses
// lane i % 4 of philox_draw(seed, DLP_STREAM | i / 4, b, offset + s); the
// acceptance test lane 0 of philox_draw(seed, DLP_ACCEPT_STREAM, b, offset + s).
// The per-coordinate draw is an inverse CDF over l = 0..K-1 with a running sum
// in double, the acceptance test compares log(u) with log alpha in double. The
// weights' exps are simd.h's vexp over the whole (D, K) block at once.
#include "cpu/chain_op.h"
#include "cpu/ell.h"
#include "cpu/simd.h"

namespace deem {
namespace cpu {
namespace {

constexpr uint32_t kDlpStream = 0x80000000u;
constexpr uint32_t kDlpAcceptStream = 0x7FFFFFFFu;

// p[k] = exp(p[k]) for k < n, every p[k] <= 0 or -inf (-inf -> 0). Same rounding
// in every clone; the tail goes through a zero-padded vector.
DEEM_CLONES void exp_nonpositive(double* p, int64_t n) {
  typedef Vec<double>::v v;
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) vstore(p + k, vexp(vload<v>(p + k)));
  if (k < n) {
    double tail[4] = {0.0, 0.0, 0.0, 0.0};
    for (int64_t q = k; q < n; ++q) tail[q - k] = p[q];
    const v t = vexp(vload<v>(tail));
    for (int64_t q = k; q < n; ++q) p[q] = t[q - k];
  }
}

// One state's cached values: hidden logits/probabilities, gradient, the
// unnormalized proposal weights e = exp(a - max_l a) with their row sums s, the
// shifted logits lq = a - max_l a and log_norm = sum_i log s[i], so that
// log q(x' | x) = sum_i lq[i, x'_i] - log_norm.
template <typename T>
struct State {
  T *L, *P, *g;
  double *e, *s, *lq;
  double f, log_norm;
};

template <typename T>
struct Model {
  int64_t K, D, H, HK;
  const T* Wt;  // (D, K, H, K): hidden-logit contribution of visible (i, l)
  const T* bv;  // (D, K)
  const T* bh;  // (H*K)
  double inv_step;
};

// The state's values from its labels xc at the n_p present coordinates idx (compact: row p of
// g, lq, e and s is coordinate idx[p]).
template <typename T>
void eval_state(const Model<T>& M, const int32_t* idx, const int32_t* xc, int64_t n_p, State<T>& S) {
  const int64_t K = M.K, HK = M.HK;
  for (int64_t c = 0; c < HK; ++c) S.L[c] = M.bh[c];
  double fb = 0.0;
  for (int64_t p = 0; p < n_p; ++p) {
    const int64_t i = idx[p];
    const T* w = M.Wt + (i * K + xc[p]) * HK;
    for (int64_t c = 0; c < HK; ++c) S.L[c] += w[c];
    fb += static_cast<double>(M.bv[i * K + xc[p]]);
  }
  S.f = softmax_rows(S.L, S.P, M.H, K) + fb;
  // a[i, l] - max_l a[i, l] into lq, then e = exp of it in one vector pass.
  for (int64_t p = 0; p < n_p; ++p) {
    const int64_t i = idx[p];
    double* a = S.lq + p * K;
    T* g = S.g + p * K;
    for (int64_t l = 0; l < K; ++l) {
      const T* w = M.Wt + (i * K + l) * HK;
      T acc = M.bv[i * K + l];
      for (int64_t c = 0; c < HK; ++c) acc += S.P[c] * w[c];
      g[l] = acc;
    }
    const T gx = g[xc[p]];
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t l = 0; l < K; ++l) {
      a[l] = static_cast<double>(static_cast<T>((g[l] - gx) * T(0.5))) - (l == xc[p] ? 0.0 : M.inv_step);
      mx = std::max(mx, a[l]);
    }
    for (int64_t l = 0; l < K; ++l) a[l] -= mx;
  }
  std::memcpy(S.e, S.lq, sizeof(double) * n_p * K);
  exp_nonpositive(S.e, n_p * K);
  // sum_p log s[p] as logs of running products (each s[p] lies in [1, K], K < 2^30): one log
  // per ~8 coordinates instead of one each.
  double prod = 1.0;
  S.log_norm = 0.0;
  for (int64_t p = 0; p < n_p; ++p) {
    const double* e = S.e + p * K;
    double s = 0.0;
    for (int64_t l = 0; l < K; ++l) s += e[l];
    S.s[p] = s;
    prod *= s;
    if (prod > 1e250) {
      S.log_norm += std::log(prod);
      prod = 1.0;
    }
  }
  S.log_norm += std::log(prod);
}

// n_steps DLP steps of chain b at its n_p present coordinates idx, labels xc (compact, updated
// in place; xp is scratch). Returns the accepted count.
template <typename T>
int32_t run_chain(const Model<T>& M, State<T> cur, State<T> prop, const int32_t* idx, int32_t* xc, int32_t* xp,
                  int64_t n_p, int64_t b, int64_t n_steps, int64_t seed, int64_t offset) {
  const int64_t K = M.K;
  if (n_p == 0 || K == 1 || n_steps == 0) return 0;
  eval_state(M, idx, xc, n_p, cur);
  int32_t n_acc = 0;
  for (int64_t st = 0; st < n_steps; ++st) {
    const uint64_t step = static_cast<uint64_t>(offset) + static_cast<uint64_t>(st);
    double lq_fwd = 0.0;
    Philox4 r{};
    int64_t block = -1;
    for (int64_t p = 0; p < n_p; ++p) {
      const int64_t i = idx[p];
      if ((i >> 2) != block) {
        block = i >> 2;
        r = philox_draw(static_cast<uint64_t>(seed), kDlpStream | static_cast<uint32_t>(block),
                        static_cast<uint32_t>(b), step);
      }
      const int64_t l = sample_categorical(cur.e + p * K, K, philox_uniform(r.v[i & 3]) * cur.s[p]);
      xp[p] = static_cast<int32_t>(l);
      lq_fwd += cur.lq[p * K + l];
    }
    lq_fwd -= cur.log_norm;
    eval_state(M, idx, xp, n_p, prop);
    double lq_rev = -prop.log_norm;
    for (int64_t p = 0; p < n_p; ++p) lq_rev += prop.lq[p * K + xc[p]];
    const Philox4 ra = philox_draw(static_cast<uint64_t>(seed), kDlpAcceptStream, static_cast<uint32_t>(b), step);
    const double log_alpha = prop.f - cur.f + lq_rev - lq_fwd;
    if (std::log(philox_uniform(ra.v[0])) < log_alpha) {
      ++n_acc;
      std::swap(cur, prop);
      for (int64_t p = 0; p < n_p; ++p) xc[p] = xp[p];
    }
  }
  return n_acc;
}

// One thread's two states (current, proposal) for chains of up to C present coordinates.
template <typename T>
struct Scratch {
  std::vector<T> tbuf;
  std::vector<double> dbuf;
  State<T> S[2];
  Scratch(int64_t C, int64_t K, int64_t HK) : tbuf(2 * (2 * HK + C * K)), dbuf(2 * (2 * C * K + C)) {
    for (int k = 0; k < 2; ++k) {
      T* t = tbuf.data() + k * (2 * HK + C * K);
      double* d = dbuf.data() + k * (2 * C * K + C);
      S[k].L = t;
      S[k].P = t + HK;
      S[k].g = t + 2 * HK;
      S[k].e = d;
      S[k].lq = d + C * K;
      S[k].s = d + 2 * C * K;
      S[k].f = 0.0;
      S[k].log_norm = 0.0;
    }
  }
};

// Every chain (labels already validated) in parallel, one thread's scratch per range of chains.
template <typename T, typename label_t>
void dlp_kernel(label_t* chains, int64_t Bn, const Model<T>& M, int64_t n_steps, int64_t seed, int64_t offset,
                int32_t* accepted) {
  const int64_t K = M.K, D = M.D, HK = M.HK;
  at::parallel_for(0, Bn, 1, [&](int64_t b0, int64_t b1) {
    Scratch<T> sc(D, K, HK);
    State<T>* S = sc.S;
    std::vector<int32_t> idx(D), xc(D), xp(D);
    for (int64_t b = b0; b < b1; ++b) {
      label_t* xb = chains + b * D;
      int64_t n_p = 0;
      for (int64_t i = 0; i < D; ++i) {
        if (xb[i] < 0) continue;
        idx[n_p] = static_cast<int32_t>(i);
        xc[n_p++] = static_cast<int32_t>(xb[i]);
      }
      accepted[b] = run_chain(M, S[0], S[1], idx.data(), xc.data(), xp.data(), n_p, b, n_steps, seed, offset);
      for (int64_t p = 0; p < n_p; ++p) xb[idx[p]] = static_cast<label_t>(xc[p]);
    }
  });
}

at::Tensor dlp_steps(at::Tensor& chains, const at::Tensor& W, const at::Tensor& b_v, const at::Tensor& b_h,
                     double step_size, int64_t n_steps, int64_t seed, int64_t offset) {
  const char* name = "deem::dlp_steps";
  TORCH_CHECK(std::isfinite(step_size) && step_size > 0, name, ": step_size must be a positive finite number, got ",
              step_size);
  return run_chain_op(name, chains, W, b_v, b_h, n_steps,
                      [&]<typename T, typename label_t>(const Dims& d, const at::Tensor& Wc, const at::Tensor& bv,
                                                        const at::Tensor& bh, label_t* x, int64_t B, int32_t* acc) {
                        const std::vector<T> Wt = w_il_jm(Wc.data_ptr<T>(), d);
                        const Model<T> M{d.K, d.D, d.H, d.H * d.K, Wt.data(), bv.data_ptr<T>(), bh.data_ptr<T>(),
                                         1.0 / step_size};
                        dlp_kernel<T, label_t>(x, B, M, n_steps, seed, offset, acc);
                      });
}

// ell_dlp_steps: dlp_steps on padded rows (cpu/ell.h), in place. run_chain already works on a
// chain's present coordinates, compact: here they are the row's present slots, so a chain costs
// O(slots) a step whatever D is, and with a row's voters ascending (the dense op's coordinate order)
// the chains and counts are dlp_steps' on the densified rows, bit for bit.
at::Tensor ell_dlp_steps(const at::Tensor& voter, at::Tensor& chains, const at::Tensor& W, const at::Tensor& b_v,
                         const at::Tensor& b_h, double step_size, int64_t n_steps, int64_t seed, int64_t offset) {
  const char* name = "deem::ell_dlp_steps";
  TORCH_CHECK(std::isfinite(step_size) && step_size > 0, name, ": step_size must be a positive finite number, got ",
              step_size);
  return run_ell_chain_op(name, voter, chains, W, b_v, b_h, n_steps,
                          [&]<typename T, typename label_t>(const Dims& d, const T* Wt, const T* bv, const T* bh,
                                                            const int64_t* v, label_t* x, int64_t B, int64_t S,
                                                            int32_t* acc) {
    const int64_t K = d.K, HK = d.HK();
    const Model<T> M{K, d.D, d.H, HK, Wt, bv, bh, 1.0 / step_size};
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      Scratch<T> sc(S, K, HK);
      std::vector<int32_t> idx(S), xc(S), xp(S), slot(S);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t n_p = compact_ell_row(v, x, b, S, idx.data(), xc.data(), slot.data());
        acc[b] = run_chain(M, sc.S[0], sc.S[1], idx.data(), xc.data(), xp.data(), n_p, b, n_steps, seed, offset);
        for (int64_t p = 0; p < n_p; ++p) x[b * S + slot[p]] = static_cast<label_t>(xc[p]);
      }
    });
  });
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) {
  m.impl("dlp_steps", &deem::cpu::dlp_steps);
  m.impl("ell_dlp_steps", &deem::cpu::ell_dlp_steps);
}
