// gwg_steps: n_steps Gibbs-with-Gradients Metropolis-Hastings steps per chain, in place.
//
// Why this shape: chains are independent and each step is a dependent sequence
// of small dense pieces (hidden logits, softmax, the D*K gradient, a
// categorical draw over D*K proposals, the same at x', an accept test), so one
// WARP owns one chain for all n_steps: the lanes share each piece
//   * hidden logits: lane per hidden element e, gather-sum Wt[i, x_i, e] over
//     the present i (x is a shared-memory broadcast, Wt reads are contiguous);
//   * gradient g[i, l] = b_v[i, l] + sum_e P[e] Wg[e, i, l]: lane per (i, l),
//     Wg = (H*K, D, K) so the lanes read consecutive words (no bank conflicts);
//   * proposal: warp max / sum for the log-sum-exp (double), then the inverse
//     CDF in the spec's flattened (i, l) order with a warp prefix scan and a
//     ballot, 32 entries at a time;
// and the chain state (x, P, g at x and at x') stays in the warp's slice of
// shared memory across steps (a global scratch slice if it does not fit). The
// gradient, P and f at x are cached across steps: after an accepted move they
// are the ones already computed at x', after a rejection they are unchanged, so
// the results are identical to recomputing them. Wt and Wg are staged in
// shared memory once per block when they fit (grid = resident blocks,
// grid-stride over chains), else read through L1.
// Random numbers: r = philox_draw(seed, 0, b, offset + s), u1/u2 from r.v[0]/v[1],
// exactly as the spec and the CPU kernel, so chains agree across devices up to
// floating-point rounding of the (double) log-sum-exps.
// Bad labels: hot path, no sync -- an entry outside [-1, K) is treated as
// missing (never read as an index, never written) and flagged on the device;
// the flag is read only when DEEM_CHECK_KERNELS=1.
#include "cuda/chain.cuh"

namespace deem {
namespace cuda {
namespace {

constexpr int kGwgWarps = 4;

template <typename scalar_t>
struct GwgArgs : ChainArgs<scalar_t> {
  long long P_off, g_off, P1_off, g1_off;  // inside a warp's slice
};

// Proposal logit d[i, l] / 2 = (g[i, l] - g[i, x_i]) * 0.5 in the parameter dtype
// (like the CPU kernel and the twin); exp(logit - max) also in that dtype, sums in double.
template <typename scalar_t>
__device__ __forceinline__ scalar_t prop_logit(const scalar_t* g, int idx, int i, int K, int xi) {
  return static_cast<scalar_t>((g[idx] - g[i * K + xi]) * scalar_t(0.5));
}
template <typename scalar_t>
__device__ __forceinline__ double prop_exp(scalar_t lg, double mx) {
  return static_cast<double>(dexp(static_cast<scalar_t>(lg - static_cast<scalar_t>(mx))));
}

struct PropStats {
  double mx, total, lse;
  int count;
};

// Max, sum of exp(logit - max) and log-sum-exp of the proposal logits at x
// (eligible: present i, l != x_i).
template <typename scalar_t>
__device__ PropStats prop_stats(const int* x, const scalar_t* g, int D, int K, int lane) {
  const int DK = D * K;
  double mx = -INFINITY;
  int count = 0;
  for (int idx = lane; idx < DK; idx += 32) {
    const int i = idx / K, l = idx - i * K, xi = x[i];
    if (xi < 0 || l == xi) continue;
    mx = fmax(mx, static_cast<double>(prop_logit(g, idx, i, K, xi)));
    ++count;
  }
  PropStats ps;
  ps.mx = warp_max(mx);
  ps.count = warp_sum_int(count);
  double s = 0.0;
  if (ps.count > 0) {
    for (int idx = lane; idx < DK; idx += 32) {
      const int i = idx / K, l = idx - i * K, xi = x[i];
      if (xi < 0 || l == xi) continue;
      s += prop_exp(prop_logit(g, idx, i, K, xi), ps.mx);
    }
  }
  ps.total = warp_sum(s);
  ps.lse = ps.count > 0 ? ps.mx + log(ps.total) : -INFINITY;
  return ps;
}

// First eligible flattened (i, l) with u1 * total < running sum of exp(logit - max);
// the last eligible entry if rounding leaves none. Warp-uniform result.
template <typename scalar_t>
__device__ int select_proposal(const int* x, const scalar_t* g, int D, int K, const PropStats& ps, double u1,
                               int lane) {
  const int DK = D * K;
  const double thr = u1 * ps.total;
  double carry = 0.0;
  int last = -1;
  for (int base = 0; base < DK; base += 32) {
    const int idx = base + lane;
    bool el = false;
    double ev = 0.0;
    if (idx < DK) {
      const int i = idx / K, l = idx - i * K, xi = x[i];
      el = xi >= 0 && l != xi;
      if (el) ev = prop_exp(prop_logit(g, idx, i, K, xi), ps.mx);
    }
    double sc = ev;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const double t = __shfl_up_sync(0xffffffffu, sc, o);
      if (lane >= o) sc += t;
    }
    const double run = carry + sc;
    const unsigned hit = __ballot_sync(0xffffffffu, el && thr < run);
    if (hit) return base + __ffs(hit) - 1;
    const unsigned em = __ballot_sync(0xffffffffu, el);
    if (em) last = base + 31 - __clz(em);
    carry = __shfl_sync(0xffffffffu, run, 31);
  }
  return last;
}

template <typename scalar_t, typename label_t>
__global__ void __launch_bounds__(kGwgWarps * 32)
    gwg_kernel(GwgArgs<scalar_t> a, label_t* __restrict__ chains, int* __restrict__ flag) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int D = a.D, K = a.K;
  const ChainWarp<scalar_t> w = chain_warp<kGwgWarps>(a, smem);
  const scalar_t *Wt = w.Wt, *Wg = w.Wg;
  const int lane = w.lane;
  unsigned char* ws = w.ws;
  int* x = reinterpret_cast<int*>(ws);
  bool bad = false;
  for (int64_t b = w.first; b < a.B; b += w.stride) {
    label_t* row = chains + b * D;
    for (int i = lane; i < D; i += 32) x[i] = checked_label(row[i], K, bad);
    __syncwarp();
    scalar_t* P0 = reinterpret_cast<scalar_t*>(ws + a.P_off);
    scalar_t* g0 = reinterpret_cast<scalar_t*>(ws + a.g_off);
    scalar_t* P1 = reinterpret_cast<scalar_t*>(ws + a.P1_off);
    scalar_t* g1 = reinterpret_cast<scalar_t*>(ws + a.g1_off);
    int acc = 0;
    double f0 = eval_state(a, x, P0, g0, Wt, Wg, lane);
    PropStats ps0 = prop_stats(x, g0, D, K, lane);
    if (ps0.count > 0) {  // else: no present entry or K == 1 -- the chain never moves
      for (int s = 0; s < a.n_steps; ++s) {
        const Philox4 r = philox_draw(a.seed, 0u, static_cast<uint32_t>(b), a.offset + static_cast<uint64_t>(s));
        const double u1 = philox_uniform(r.v[0]), u2 = philox_uniform(r.v[1]);
        const int sel = select_proposal(x, g0, D, K, ps0, u1, lane);
        const int i = sel / K, l = sel - i * K;
        const int xi = x[i];
        const double lq_fwd = static_cast<double>(prop_logit(g0, sel, i, K, xi)) - ps0.lse;
        __syncwarp();
        if (lane == 0) x[i] = l;
        __syncwarp();
        const double f1 = eval_state(a, x, P1, g1, Wt, Wg, lane);
        const PropStats ps1 = prop_stats(x, g1, D, K, lane);
        const double lq_rev = static_cast<double>(prop_logit(g1, i * K + xi, i, K, l)) - ps1.lse;
        const double log_alpha = f1 - f0 + lq_rev - lq_fwd;
        if (log(u2) < log_alpha) {
          scalar_t* t = P0;
          P0 = P1;
          P1 = t;
          t = g0;
          g0 = g1;
          g1 = t;
          f0 = f1;
          ps0 = ps1;
          ++acc;
        } else {
          __syncwarp();
          if (lane == 0) x[i] = xi;
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

// Same C++ signature as the CPU kernel (the dispatcher requires one): chains is Tensor(a!).
at::Tensor gwg_steps(at::Tensor& chains, const at::Tensor& W, const at::Tensor& b_v, const at::Tensor& b_h,
                     int64_t n_steps, int64_t seed, int64_t offset) {
  return run_chain_op("deem::gwg_steps", chains, W, b_v, b_h, n_steps,
                      [&]<typename scalar_t, typename label_t>(
                          const Dims& d, int64_t B, const at::Tensor& Wc, const at::Tensor& Wt, const at::Tensor& Wg,
                          const at::Tensor& b_vc, const at::Tensor& b_hc, at::Tensor& accepted, label_t* x, int* flag) {
    GwgArgs<scalar_t> a;
    fill_chain_args(a, B, d, Wt, Wg, b_vc, b_hc, n_steps, seed, offset, accepted);
    const int64_t HK = d.HK(), DK = d.D * d.K;
    // Per-warp slice: x (int, D) | P (HK) | g (DK) | P' (HK) | g' (DK).
    SmemPlan slice(~size_t(0));
    slice.add(d.D * sizeof(int));
    a.P_off = slice.add(HK * sizeof(scalar_t));
    a.g_off = slice.add(DK * sizeof(scalar_t));
    a.P1_off = slice.add(HK * sizeof(scalar_t));
    a.g1_off = slice.add(DK * sizeof(scalar_t));
    a.ws_bytes = static_cast<long long>(round16(slice.used));
    launch_chains<kGwgWarps>(gwg_kernel<scalar_t, label_t>, a, Wc, x, flag);
  });
}

}  // namespace
}  // namespace cuda
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CUDA, m) { m.impl("gwg_steps", &deem::cuda::gwg_steps); }
