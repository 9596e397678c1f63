// dlp_steps: n_steps discrete-Langevin Metropolis-Hastings steps per chain, in
// place (see csrc/cpu/dlp.cpp for the proposal and the random-number layout,
// which this kernel shares).
//
// Why this shape: as in gwg.cu, one WARP owns one chain for all n_steps. Hidden
// logits, f and the gradient come from the shared eval_state (lanes over hidden
// elements, then over (i, l)); the proposal is per coordinate, so lanes take
// coordinates i: each lane forms its coordinates' K proposal weights, draws
// their new values and adds their log-probabilities; warp sums give the
// forward and reverse log-proposals. The state at x (P, g, weights, row sums,
// log-probabilities) is cached across steps and swapped with the proposal's on
// acceptance. Wt and Wg are staged in shared memory once per block when they fit.
// Bad labels: treated as missing and flagged (read only with DEEM_CHECK_KERNELS=1).
#include "cuda/chain.cuh"

namespace deem {
namespace cuda {
namespace {

constexpr int kDlpWarps = 4;
constexpr uint32_t kDlpStream = 0x80000000u;
constexpr uint32_t kDlpAcceptStream = 0x7FFFFFFFu;

template <typename scalar_t>
struct DlpArgs : ChainArgs<scalar_t> {
  double inv_step;
  long long xp_off, P_off[2], g_off[2], e_off[2], s_off[2], lq_off[2];  // inside a warp's slice
};

// One state's buffers inside a warp's slice.
template <typename scalar_t>
struct StateBufs {
  scalar_t *P, *g;
  double *e, *s, *lq;
};

// From g at x: per present coordinate i, e[i, l] = exp(a[i, l] - max_l a), s[i] = running
// sum of e over l, lq[i, l] = a[i, l] - max - log(s[i]) (as the CPU kernel, in double).
template <typename scalar_t>
__device__ void proposal_weights(const DlpArgs<scalar_t>& a, const int* x, StateBufs<scalar_t>& S, int lane) {
  const int K = a.K;
  for (int i = lane; i < a.D; i += 32) {
    const int xi = x[i];
    if (xi < 0) continue;
    const scalar_t* g = S.g + i * K;
    double* e = S.e + i * K;
    double* lq = S.lq + i * K;
    const scalar_t gx = g[xi];
    double mx = -INFINITY;
    for (int l = 0; l < K; ++l) {
      e[l] = static_cast<double>(static_cast<scalar_t>((g[l] - gx) * scalar_t(0.5))) - (l == xi ? 0.0 : a.inv_step);
      mx = fmax(mx, e[l]);
    }
    double s = 0.0;
    for (int l = 0; l < K; ++l) {
      const double v = e[l] - mx;
      e[l] = exp(v);
      s += e[l];
      lq[l] = v;
    }
    S.s[i] = s;
    const double ls = log(s);
    for (int l = 0; l < K; ++l) lq[l] -= ls;
  }
  __syncwarp();
}

template <typename scalar_t>
__device__ double eval_dlp(const DlpArgs<scalar_t>& a, const int* x, StateBufs<scalar_t>& S, const scalar_t* Wt,
                           const scalar_t* Wg, int lane) {
  const double f = eval_state(a, x, S.P, S.g, Wt, Wg, lane);
  proposal_weights(a, x, S, lane);
  return f;
}

template <typename scalar_t, typename label_t>
__global__ void __launch_bounds__(kDlpWarps * 32)
    dlp_kernel(DlpArgs<scalar_t> a, label_t* __restrict__ chains, int* __restrict__ flag) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int D = a.D, K = a.K;
  const ChainWarp<scalar_t> w = chain_warp<kDlpWarps>(a, smem);
  const scalar_t *Wt = w.Wt, *Wg = w.Wg;
  const int lane = w.lane;
  unsigned char* ws = w.ws;
  int* x = reinterpret_cast<int*>(ws);
  int* xp = reinterpret_cast<int*>(ws + a.xp_off);
  StateBufs<scalar_t> S[2];
  for (int k = 0; k < 2; ++k) {
    S[k].P = reinterpret_cast<scalar_t*>(ws + a.P_off[k]);
    S[k].g = reinterpret_cast<scalar_t*>(ws + a.g_off[k]);
    S[k].e = reinterpret_cast<double*>(ws + a.e_off[k]);
    S[k].s = reinterpret_cast<double*>(ws + a.s_off[k]);
    S[k].lq = reinterpret_cast<double*>(ws + a.lq_off[k]);
  }
  bool bad = false;
  for (int64_t b = w.first; b < a.B; b += w.stride) {
    label_t* row = chains + b * D;
    int present = 0;
    for (int i = lane; i < D; i += 32) {
      x[i] = checked_label(row[i], K, bad);
      present += x[i] >= 0;
    }
    present = warp_sum_int(present);
    __syncwarp();
    int acc = 0;
    if (present > 0 && K > 1 && a.n_steps > 0) {  // else the chain never moves
      StateBufs<scalar_t> cur = S[0], prop = S[1];
      double f0 = eval_dlp(a, x, cur, Wt, Wg, lane);
      for (int s = 0; s < a.n_steps; ++s) {
        const uint64_t step = a.offset + static_cast<uint64_t>(s);
        double lq_fwd = 0.0;
        for (int i = lane; i < D; i += 32) {
          const int xi = x[i];
          xp[i] = xi;
          if (xi < 0) continue;
          const Philox4 r = philox_draw(a.seed, kDlpStream | static_cast<uint32_t>(i >> 2), static_cast<uint32_t>(b),
                                        step);
          const int l = sample_categorical(cur.e + i * K, K, philox_uniform(r.v[i & 3]) * cur.s[i]);
          xp[i] = l;
          lq_fwd += cur.lq[i * K + l];
        }
        lq_fwd = warp_sum(lq_fwd);
        __syncwarp();
        const double f1 = eval_dlp(a, xp, prop, Wt, Wg, lane);
        double lq_rev = 0.0;
        for (int i = lane; i < D; i += 32)
          if (x[i] >= 0) lq_rev += prop.lq[i * K + x[i]];
        lq_rev = warp_sum(lq_rev);
        const Philox4 ra = philox_draw(a.seed, kDlpAcceptStream, static_cast<uint32_t>(b), step);
        const double log_alpha = f1 - f0 + lq_rev - lq_fwd;
        __syncwarp();
        if (log(philox_uniform(ra.v[0])) < log_alpha) {  // warp-uniform
          const StateBufs<scalar_t> t = cur;
          cur = prop;
          prop = t;
          f0 = f1;
          ++acc;
          for (int i = lane; i < D; i += 32) x[i] = xp[i];
        }
        __syncwarp();
      }
    }
    for (int i = lane; i < D; i += 32)
      if (x[i] >= 0) row[i] = static_cast<label_t>(x[i]);
    if (lane == 0) a.accepted[b] = acc;
    __syncwarp();
  }
  raise_flag(flag, bad);
}

// Same C++ signature as the CPU kernel: chains is Tensor(a!).
at::Tensor dlp_steps(at::Tensor& chains, const at::Tensor& W, const at::Tensor& b_v, const at::Tensor& b_h,
                     double step_size, int64_t n_steps, int64_t seed, int64_t offset) {
  TORCH_CHECK(std::isfinite(step_size) && step_size > 0,
              "deem::dlp_steps: step_size must be a positive finite number, got ", step_size);
  return run_chain_op("deem::dlp_steps", chains, W, b_v, b_h, n_steps,
                      [&]<typename scalar_t, typename label_t>(
                          const Dims& d, int64_t B, const at::Tensor& Wc, const at::Tensor& Wt, const at::Tensor& Wg,
                          const at::Tensor& b_vc, const at::Tensor& b_hc, at::Tensor& accepted, label_t* x, int* flag) {
    DlpArgs<scalar_t> a;
    fill_chain_args(a, B, d, Wt, Wg, b_vc, b_hc, n_steps, seed, offset, accepted);
    a.inv_step = 1.0 / step_size;
    const int64_t HK = d.HK(), DK = d.D * d.K;
    // Per-warp slice: x, x' (int, D) | per state: P (HK), g (DK), e (double DK), s (double D), lq (double DK).
    SmemPlan slice(~size_t(0));
    slice.add(d.D * sizeof(int));
    a.xp_off = slice.add(d.D * sizeof(int));
    for (int k = 0; k < 2; ++k) {
      a.P_off[k] = slice.add(HK * sizeof(scalar_t));
      a.g_off[k] = slice.add(DK * sizeof(scalar_t));
      a.e_off[k] = slice.add(DK * sizeof(double));
      a.s_off[k] = slice.add(d.D * sizeof(double));
      a.lq_off[k] = slice.add(DK * sizeof(double));
    }
    a.ws_bytes = static_cast<long long>(round16(slice.used));
    launch_chains<kDlpWarps>(dlp_kernel<scalar_t, label_t>, a, Wc, x, flag);
  });
}

}  // namespace
}  // namespace cuda
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CUDA, m) { m.impl("dlp_steps", &deem::cuda::dlp_steps); }
