// ell_gwg_steps / ell_dlp_steps: gwg_steps / dlp_steps (gwg.cu, dlp.cu) on padded rows
// (cuda/ell.cuh), in place: a chain reads and moves its n present slots only, O(n * K * H * K) a
// step whatever D is; nothing of size B x D is formed.
//
// Why this shape: the dense kernels', on a compact state. One WARP owns one chain for all n_steps;
// at the start it reads its row's S slots (coalesced, bounds-checked) and compacts the present ones
// with a ballot into its workspace slice -- voter vo[p], state x[p], slot sl[p] for p < n, in slot
// order, which is ascending voter order (the caller's guarantee) and hence the dense op's (i, l)
// order. Everything the dense kernels keep per coordinate (the gradient g, DLP's proposal weights)
// is kept per compact entry p (n * K, not D * K), with the dense arithmetic in the dense order:
//   * hidden logits: lane per hidden element e, b_h[e] + Wt[vo[p], x[p], e] summed over p;
//   * f = -F: lane per unit (softmax, log-sum-exp in double) plus b_v of the present entries;
//   * gradient g[p, l] = b_v[vo[p], l] + sum_e P[e] W[l, m, vo[p], j], lane per (p, l), the sum over
//     e in the dense order (Wt's contiguous row (vo[p], l) holds the same numbers as Wg's column);
//   * GWG: the dense proposal (warp max / sum, inverse CDF by warp scans and ballots 32 entries at a
//     time) over the flattened (p, l); r = philox_draw(seed, 0, b, offset + s);
//   * DLP: lane per entry p; coordinate i = vo[p] (the VOTER index) draws lane i % 4 of
//     philox_draw(seed, DLP_STREAM | i / 4, b, offset + s), the acceptance lane 0 of
//     philox_draw(seed, DLP_ACCEPT_STREAM, b, offset + s).
// The state at x (P, g, and DLP's weights) is cached across steps and swapped with the proposal's
// on acceptance, as in the dense kernels. Per-coordinate numbers are the dense kernels' bit for bit;
// only the warp sums of double terms (f, the proposal normaliser, the log-proposals) pair their
// terms differently (lanes own entries p, not voters i), a rounding-level difference, so chains
// and acceptance counts match the dense ops on the densified rows in practice.
// Workspace: a slice per resident warp, O(S * K + H * K), in shared memory when it fits, else in a
// global buffer (at most ~1 GiB, the grid shrinks for very long rows). Wt is staged in shared memory
// only when small (a chain reads just its slots' rows; L1 serves them otherwise).
// Bad entries (a label outside [-1, K), a present slot's voter outside [0, D)): treated as empty --
// never an index, never written -- and flagged; the flag is read only when DEEM_CHECK_KERNELS=1.
#include "cuda/ell.cuh"

namespace deem {
namespace cuda {
namespace {

constexpr int kEllWarps = 4;
constexpr uint32_t kDlpStream = 0x80000000u;        // as dlp.cu / _reference.DLP_STREAM
constexpr uint32_t kDlpAcceptStream = 0x7FFFFFFFu;  // as dlp.cu / _reference.DLP_ACCEPT_STREAM

template <typename scalar_t>
struct EllChainArgs {
  int64_t B, S;
  int D, K, H;
  const scalar_t* Wt;  // (D, K_v, H*K)
  long long wt_off;
  const scalar_t* bv;
  const scalar_t* bh;
  const int64_t* voter;  // (B, S)
  int n_steps;
  uint64_t seed, offset;
  int32_t* accepted;
  unsigned char* ws_global;  // (total warps, ws_bytes) when ws_off < 0
  long long ws_off;
  long long ws_bytes;                // per warp
  long long vo_off, x_off, sl_off;  // int (S) each, inside a warp's slice
};

template <typename scalar_t>
struct EllWarp {
  const scalar_t* Wt;
  unsigned char* ws;
  int lane;
  int64_t first, stride;
};

// Kernel prologue: every thread of the block calls it (it ends with __syncthreads()).
template <int kWarps, typename scalar_t>
__device__ EllWarp<scalar_t> ell_chain_warp(const EllChainArgs<scalar_t>& a, unsigned char* smem) {
  EllWarp<scalar_t> w;
  w.Wt = stage(a.Wt, int64_t(a.D) * a.K * a.H * a.K, a.wt_off, smem);
  __syncthreads();
  const int warp = threadIdx.x >> 5;
  w.lane = threadIdx.x & 31;
  w.first = int64_t(blockIdx.x) * kWarps + warp;
  w.stride = int64_t(gridDim.x) * kWarps;
  w.ws = a.ws_off >= 0 ? smem + a.ws_off + warp * a.ws_bytes : a.ws_global + w.first * a.ws_bytes;
  return w;
}

// Compacts row b's present slots (in slot order) into vo / x / sl; returns their count n (warp-uniform).
template <typename scalar_t, typename label_t>
__device__ int ell_load_row(const EllChainArgs<scalar_t>& a, const label_t* row, const int64_t* vrow, int* vo,
                            int* x, int* sl, int lane, bool& bad) {
  int n = 0;
  for (int64_t base = 0; base < a.S; base += 32) {
    const int64_t s = base + lane;
    int v = 0, l = -1;
    if (s < a.S) l = ell_slot(vrow, row, s, a.K, a.D, v, bad);
    const unsigned m = __ballot_sync(0xffffffffu, l >= 0);
    if (l >= 0) {
      const int p = n + __popc(m & ((1u << lane) - 1u));
      vo[p] = v;
      x[p] = l;
      sl[p] = static_cast<int>(s);
    }
    n += __popc(m);
  }
  __syncwarp();
  return n;
}

// Hidden probabilities P, gradient g[p, l] (n * K) at the compact state x; returns f(x) = -F(x) (double).
template <typename Args, typename scalar_t>
__device__ double ell_eval(const Args& a, int n, const int* vo, const int* x, scalar_t* P, scalar_t* g,
                           const scalar_t* Wt, int lane) {
  const int K = a.K, H = a.H, HK = H * K;
  for (int e = lane; e < HK; e += 32) {
    scalar_t s = a.bh[e];
    for (int p = 0; p < n; ++p) s += Wt[(int64_t(vo[p]) * K + x[p]) * HK + e];
    P[e] = s;
  }
  __syncwarp();
  double f = 0.0;
  for (int j = lane; j < H; j += 32) f += softmax_unit(P + j * K, K);
  for (int p = lane; p < n; p += 32) f += static_cast<double>(a.bv[int64_t(vo[p]) * K + x[p]]);
  f = warp_sum(f);
  __syncwarp();
  const int nK = n * K;
  for (int idx = lane; idx < nK; idx += 32) {
    const int p = idx / K, l = idx - p * K;
    const int64_t vl = int64_t(vo[p]) * K + l;
    const scalar_t* w = Wt + vl * HK;
    scalar_t s = a.bv[vl];
    for (int e = 0; e < HK; ++e) s += P[e] * w[e];
    g[idx] = s;
  }
  __syncwarp();
  return f;
}

// Host: the common arguments from the (contiguous) parameters.
template <typename scalar_t>
void fill_ell_args(EllChainArgs<scalar_t>& a, const Dims& d, int64_t B, int64_t S, const at::Tensor& Wt,
                   const at::Tensor& b_v, const at::Tensor& b_h, const at::Tensor& voter, int64_t n_steps,
                   int64_t seed, int64_t offset, at::Tensor& accepted) {
  a.B = B;
  a.S = S;
  a.D = static_cast<int>(d.D);
  a.K = static_cast<int>(d.K);
  a.H = static_cast<int>(d.H);
  a.Wt = Wt.data_ptr<scalar_t>();
  a.bv = b_v.data_ptr<scalar_t>();
  a.bh = b_h.data_ptr<scalar_t>();
  a.voter = voter.data_ptr<int64_t>();
  a.n_steps = static_cast<int>(n_steps);
  a.seed = static_cast<uint64_t>(seed);
  a.offset = static_cast<uint64_t>(offset);
  a.accepted = accepted.data_ptr<int32_t>();
}

// Host: the compact-state int arrays (vo, x, sl) at the start of a warp's slice.
inline void plan_ell_ints(SmemPlan& slice, long long& vo_off, long long& x_off, long long& sl_off, int64_t S) {
  vo_off = slice.add(S * sizeof(int));
  x_off = slice.add(S * sizeof(int));
  sl_off = slice.add(S * sizeof(int));
}

// Host: plans shared memory (the warps' slices first, then Wt when small), sizes the grid
// (resident blocks, grid-stride over chains) and launches.
template <int kWarps, typename Args, typename Kernel, typename label_t>
void launch_ell_chains(Kernel kernel, Args& a, const at::Tensor& W, label_t* chains, int* flag) {
  SmemPlan plan(max_smem_optin());
  a.ws_off = plan.add_optional(size_t(a.ws_bytes) * kWarps);
  const size_t wt_bytes = size_t(a.D) * a.K * a.H * a.K * W.element_size();
  a.wt_off = wt_bytes <= 64 * 1024 ? plan.add_optional(wt_bytes) : -1;
  const size_t smem = plan.used;
  set_smem(kernel, smem);
  const int threads = kWarps * 32;
  int64_t grid = std::min<int64_t>(ceil_div(a.B, kWarps), int64_t(blocks_per_sm(kernel, threads, smem)) * num_sms());
  at::Tensor ws_global;
  a.ws_global = nullptr;
  if (a.ws_off < 0) {
    const int64_t cap = std::max<int64_t>(1, (int64_t(1) << 30) / (int64_t(kWarps) * a.ws_bytes));
    grid = std::min<int64_t>(grid, cap);
    ws_global = at::empty({grid * kWarps * a.ws_bytes}, W.options().dtype(at::kByte));
    a.ws_global = ws_global.data_ptr<uint8_t>();
  }
  kernel<<<static_cast<unsigned>(grid), threads, smem, at::cuda::getCurrentCUDAStream()>>>(a, chains, flag);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Host: the shell of both ops: argument checks, the (B,) accepted counts, a contiguous working copy
// of the chains written back after, the float / label-dtype dispatch with Wt, and the device-side
// bad-entry flag, read back (a sync) only when DEEM_CHECK_KERNELS=1. Inside the dispatch:
//   body.template operator()<scalar_t, label_t>(d, B, S, W, Wt, b_v, b_h, voter, accepted, x, flag)
template <typename Body>
at::Tensor run_ell_chain_op(const char* name, const at::Tensor& voter_, at::Tensor& chains, const at::Tensor& W_,
                            const at::Tensor& b_v_, const at::Tensor& b_h_, int64_t n_steps, const Body& body) {
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_ell(name, "chains", voter_, chains, W_, d);
  TORCH_CHECK(n_steps >= 0 && n_steps < (int64_t(1) << 31), name, ": n_steps must be >= 0, got ", n_steps);
  const c10::cuda::CUDAGuard guard(W_.device());
  const int64_t B = chains.size(0), S = chains.size(1);
  at::Tensor accepted = at::zeros({B}, chains.options().dtype(at::kInt));
  if (B == 0 || S == 0 || n_steps == 0) return accepted;
  const bool in_place = chains.is_contiguous();
  at::Tensor x = in_place ? chains : chains.contiguous();
  const at::Tensor voter = voter_.contiguous();
  const at::Tensor W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  at::Tensor flag = new_flag(W);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    DEEM_DISPATCH_LABELS(x.scalar_type(), name, [&] {
      const at::Tensor Wt = w_il_jm(W);
      body.template operator()<scalar_t, label_t>(d, B, S, W, Wt, b_v, b_h, voter, accepted, x.data_ptr<label_t>(),
                                                  flag.data_ptr<int>());
    });
  });
  if (!in_place) chains.copy_(x);
  if (check_kernels_env()) raise_if_ell_flagged(flag, name);
  return accepted;
}

// ---------------------------------------------------------------------------- GWG
// The proposal pieces of gwg.cu over the compact state (n entries instead of D coordinates).

template <typename scalar_t>
struct EllGwgArgs : EllChainArgs<scalar_t> {
  long long P_off, g_off, P1_off, g1_off;  // inside a warp's slice
};

// Proposal logit d[p, l] / 2 = (g[p, l] - g[p, x_p]) * 0.5 in the parameter dtype; exp(logit - max)
// also in that dtype, sums in double (as gwg.cu).
template <typename scalar_t>
__device__ __forceinline__ scalar_t prop_logit(const scalar_t* g, int idx, int p, int K, int xp) {
  return static_cast<scalar_t>((g[idx] - g[p * K + xp]) * scalar_t(0.5));
}
template <typename scalar_t>
__device__ __forceinline__ double prop_exp(scalar_t lg, double mx) {
  return static_cast<double>(dexp(static_cast<scalar_t>(lg - static_cast<scalar_t>(mx))));
}

struct PropStats {
  double mx, total, lse;
  int count;
};

// Max, sum of exp(logit - max) and log-sum-exp of the proposal logits at x (eligible: l != x_p).
template <typename scalar_t>
__device__ PropStats prop_stats(const int* x, const scalar_t* g, int n, int K, int lane) {
  const int nK = n * K;
  double mx = -INFINITY;
  int count = 0;
  for (int idx = lane; idx < nK; idx += 32) {
    const int p = idx / K, l = idx - p * K, xp = x[p];
    if (l == xp) continue;
    mx = fmax(mx, static_cast<double>(prop_logit(g, idx, p, K, xp)));
    ++count;
  }
  PropStats ps;
  ps.mx = warp_max(mx);
  ps.count = warp_sum_int(count);
  double s = 0.0;
  if (ps.count > 0) {
    for (int idx = lane; idx < nK; idx += 32) {
      const int p = idx / K, l = idx - p * K, xp = x[p];
      if (l == xp) continue;
      s += prop_exp(prop_logit(g, idx, p, K, xp), ps.mx);
    }
  }
  ps.total = warp_sum(s);
  ps.lse = ps.count > 0 ? ps.mx + log(ps.total) : -INFINITY;
  return ps;
}

// First eligible flattened (p, l) with u1 * total < running sum of exp(logit - max); the last
// eligible entry if rounding leaves none. Warp-uniform result.
template <typename scalar_t>
__device__ int select_proposal(const int* x, const scalar_t* g, int n, int K, const PropStats& ps, double u1,
                               int lane) {
  const int nK = n * K;
  const double thr = u1 * ps.total;
  double carry = 0.0;
  int last = -1;
  for (int base = 0; base < nK; base += 32) {
    const int idx = base + lane;
    bool el = false;
    double ev = 0.0;
    if (idx < nK) {
      const int p = idx / K, l = idx - p * K, xp = x[p];
      el = l != xp;
      if (el) ev = prop_exp(prop_logit(g, idx, p, K, xp), ps.mx);
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
__global__ void __launch_bounds__(kEllWarps * 32)
    ell_gwg_kernel(EllGwgArgs<scalar_t> a, label_t* __restrict__ chains, int* __restrict__ flag) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int K = a.K;
  const EllWarp<scalar_t> w = ell_chain_warp<kEllWarps>(a, smem);
  const scalar_t* Wt = w.Wt;
  const int lane = w.lane;
  unsigned char* ws = w.ws;
  int* vo = reinterpret_cast<int*>(ws + a.vo_off);
  int* x = reinterpret_cast<int*>(ws + a.x_off);
  int* sl = reinterpret_cast<int*>(ws + a.sl_off);
  bool bad = false;
  for (int64_t b = w.first; b < a.B; b += w.stride) {
    label_t* row = chains + b * a.S;
    const int n = ell_load_row(a, row, a.voter + b * a.S, vo, x, sl, lane, bad);
    scalar_t* P0 = reinterpret_cast<scalar_t*>(ws + a.P_off);
    scalar_t* g0 = reinterpret_cast<scalar_t*>(ws + a.g_off);
    scalar_t* P1 = reinterpret_cast<scalar_t*>(ws + a.P1_off);
    scalar_t* g1 = reinterpret_cast<scalar_t*>(ws + a.g1_off);
    int acc = 0;
    if (n > 0 && K > 1) {  // else no proposal exists -- the chain never moves
      double f0 = ell_eval(a, n, vo, x, P0, g0, Wt, lane);
      PropStats ps0 = prop_stats(x, g0, n, K, lane);
      if (ps0.count > 0) {
        for (int s = 0; s < a.n_steps; ++s) {
          const Philox4 r = philox_draw(a.seed, 0u, static_cast<uint32_t>(b), a.offset + static_cast<uint64_t>(s));
          const double u1 = philox_uniform(r.v[0]), u2 = philox_uniform(r.v[1]);
          const int sel = select_proposal(x, g0, n, K, ps0, u1, lane);
          const int p = sel / K, l = sel - p * K;
          const int xo = x[p];
          const double lq_fwd = static_cast<double>(prop_logit(g0, sel, p, K, xo)) - ps0.lse;
          __syncwarp();
          if (lane == 0) x[p] = l;
          __syncwarp();
          const double f1 = ell_eval(a, n, vo, x, P1, g1, Wt, lane);
          const PropStats ps1 = prop_stats(x, g1, n, K, lane);
          const double lq_rev = static_cast<double>(prop_logit(g1, p * K + xo, p, K, l)) - ps1.lse;
          const double log_alpha = f1 - f0 + lq_rev - lq_fwd;
          if (log(u2) < log_alpha) {  // warp-uniform
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
            if (lane == 0) x[p] = xo;
          }
          __syncwarp();
        }
      }
    }
    if (acc > 0)  // only present slots are written
      for (int p = lane; p < n; p += 32) row[sl[p]] = static_cast<label_t>(x[p]);
    if (lane == 0) a.accepted[b] = acc;
    __syncwarp();
  }
  raise_flag(flag, bad);
}

// Same C++ signature as the CPU kernel (the dispatcher requires one): chains is Tensor(a!).
at::Tensor ell_gwg_steps(const at::Tensor& voter, at::Tensor& chains, const at::Tensor& W, const at::Tensor& b_v,
                         const at::Tensor& b_h, int64_t n_steps, int64_t seed, int64_t offset) {
  return run_ell_chain_op(
      "deem::ell_gwg_steps", voter, chains, W, b_v, b_h, n_steps,
      [&]<typename scalar_t, typename label_t>(const Dims& d, int64_t B, int64_t S, const at::Tensor& Wc,
                                               const at::Tensor& Wt, const at::Tensor& b_vc, const at::Tensor& b_hc,
                                               const at::Tensor& vc, at::Tensor& accepted, label_t* x, int* flag) {
        EllGwgArgs<scalar_t> a;
        fill_ell_args(a, d, B, S, Wt, b_vc, b_hc, vc, n_steps, seed, offset, accepted);
        const int64_t HK = d.HK(), SK = S * d.K;
        // Per-warp slice: vo, x, sl (int, S) | P (HK) | g (S*K) | P' (HK) | g' (S*K).
        SmemPlan slice(~size_t(0));
        plan_ell_ints(slice, a.vo_off, a.x_off, a.sl_off, S);
        a.P_off = slice.add(HK * sizeof(scalar_t));
        a.g_off = slice.add(SK * sizeof(scalar_t));
        a.P1_off = slice.add(HK * sizeof(scalar_t));
        a.g1_off = slice.add(SK * sizeof(scalar_t));
        a.ws_bytes = static_cast<long long>(round16(slice.used));
        launch_ell_chains<kEllWarps>(ell_gwg_kernel<scalar_t, label_t>, a, Wc, x, flag);
      });
}

// ---------------------------------------------------------------------------- DLP

template <typename scalar_t>
struct EllDlpArgs : EllChainArgs<scalar_t> {
  double inv_step;
  long long xp_off, P_off[2], g_off[2], e_off[2], s_off[2], lq_off[2];  // inside a warp's slice
};

// One state's buffers inside a warp's slice (per compact entry p).
template <typename scalar_t>
struct StateBufs {
  scalar_t *P, *g;
  double *e, *s, *lq;
};

// From g at x: per entry p, e[p, l] = exp(a[p, l] - max_l a), s[p] = running sum of e over l,
// lq[p, l] = a[p, l] - max - log(s[p]) (dlp.cu's arithmetic, in double).
template <typename scalar_t>
__device__ void proposal_weights(const EllDlpArgs<scalar_t>& a, int n, const int* x, StateBufs<scalar_t>& S,
                                 int lane) {
  const int K = a.K;
  for (int p = lane; p < n; p += 32) {
    const int xp = x[p];
    const scalar_t* g = S.g + p * K;
    double* e = S.e + p * K;
    double* lq = S.lq + p * K;
    const scalar_t gx = g[xp];
    double mx = -INFINITY;
    for (int l = 0; l < K; ++l) {
      e[l] = static_cast<double>(static_cast<scalar_t>((g[l] - gx) * scalar_t(0.5))) - (l == xp ? 0.0 : a.inv_step);
      mx = fmax(mx, e[l]);
    }
    double s = 0.0;
    for (int l = 0; l < K; ++l) {
      const double v = e[l] - mx;
      e[l] = exp(v);
      s += e[l];
      lq[l] = v;
    }
    S.s[p] = s;
    const double ls = log(s);
    for (int l = 0; l < K; ++l) lq[l] -= ls;
  }
  __syncwarp();
}

template <typename scalar_t>
__device__ double eval_dlp(const EllDlpArgs<scalar_t>& a, int n, const int* vo, const int* x,
                           StateBufs<scalar_t>& S, const scalar_t* Wt, int lane) {
  const double f = ell_eval(a, n, vo, x, S.P, S.g, Wt, lane);
  proposal_weights(a, n, x, S, lane);
  return f;
}

template <typename scalar_t, typename label_t>
__global__ void __launch_bounds__(kEllWarps * 32)
    ell_dlp_kernel(EllDlpArgs<scalar_t> a, label_t* __restrict__ chains, int* __restrict__ flag) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int K = a.K;
  const EllWarp<scalar_t> w = ell_chain_warp<kEllWarps>(a, smem);
  const scalar_t* Wt = w.Wt;
  const int lane = w.lane;
  unsigned char* ws = w.ws;
  int* vo = reinterpret_cast<int*>(ws + a.vo_off);
  int* x = reinterpret_cast<int*>(ws + a.x_off);
  int* sl = reinterpret_cast<int*>(ws + a.sl_off);
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
    label_t* row = chains + b * a.S;
    const int n = ell_load_row(a, row, a.voter + b * a.S, vo, x, sl, lane, bad);
    int acc = 0;
    if (n > 0 && K > 1 && a.n_steps > 0) {  // else the chain never moves
      StateBufs<scalar_t> cur = S[0], prop = S[1];
      double f0 = eval_dlp(a, n, vo, x, cur, Wt, lane);
      for (int s = 0; s < a.n_steps; ++s) {
        const uint64_t step = a.offset + static_cast<uint64_t>(s);
        double lq_fwd = 0.0;
        for (int p = lane; p < n; p += 32) {
          const int i = vo[p];  // the coordinate's voter index picks its draw
          const Philox4 r = philox_draw(a.seed, kDlpStream | static_cast<uint32_t>(i >> 2), static_cast<uint32_t>(b),
                                        step);
          const int l = sample_categorical(cur.e + p * K, K, philox_uniform(r.v[i & 3]) * cur.s[p]);
          xp[p] = l;
          lq_fwd += cur.lq[p * K + l];
        }
        lq_fwd = warp_sum(lq_fwd);
        __syncwarp();
        const double f1 = eval_dlp(a, n, vo, xp, prop, Wt, lane);
        double lq_rev = 0.0;
        for (int p = lane; p < n; p += 32) lq_rev += prop.lq[p * K + x[p]];
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
          for (int p = lane; p < n; p += 32) x[p] = xp[p];
        }
        __syncwarp();
      }
    }
    if (acc > 0)  // only present slots are written
      for (int p = lane; p < n; p += 32) row[sl[p]] = static_cast<label_t>(x[p]);
    if (lane == 0) a.accepted[b] = acc;
    __syncwarp();
  }
  raise_flag(flag, bad);
}

// Same C++ signature as the CPU kernel: chains is Tensor(a!).
at::Tensor ell_dlp_steps(const at::Tensor& voter, at::Tensor& chains, const at::Tensor& W, const at::Tensor& b_v,
                         const at::Tensor& b_h, double step_size, int64_t n_steps, int64_t seed, int64_t offset) {
  TORCH_CHECK(std::isfinite(step_size) && step_size > 0,
              "deem::ell_dlp_steps: step_size must be a positive finite number, got ", step_size);
  return run_ell_chain_op(
      "deem::ell_dlp_steps", voter, chains, W, b_v, b_h, n_steps,
      [&]<typename scalar_t, typename label_t>(const Dims& d, int64_t B, int64_t S, const at::Tensor& Wc,
                                               const at::Tensor& Wt, const at::Tensor& b_vc, const at::Tensor& b_hc,
                                               const at::Tensor& vc, at::Tensor& accepted, label_t* x, int* flag) {
        EllDlpArgs<scalar_t> a;
        fill_ell_args(a, d, B, S, Wt, b_vc, b_hc, vc, n_steps, seed, offset, accepted);
        a.inv_step = 1.0 / step_size;
        const int64_t HK = d.HK(), SK = S * d.K;
        // Per-warp slice: vo, x, sl, x' (int, S) | per state: P (HK), g (S*K), e (double S*K),
        // s (double S), lq (double S*K).
        SmemPlan slice(~size_t(0));
        plan_ell_ints(slice, a.vo_off, a.x_off, a.sl_off, S);
        a.xp_off = slice.add(S * sizeof(int));
        for (int k = 0; k < 2; ++k) {
          a.P_off[k] = slice.add(HK * sizeof(scalar_t));
          a.g_off[k] = slice.add(SK * sizeof(scalar_t));
          a.e_off[k] = slice.add(SK * sizeof(double));
          a.s_off[k] = slice.add(S * sizeof(double));
          a.lq_off[k] = slice.add(SK * sizeof(double));
        }
        a.ws_bytes = static_cast<long long>(round16(slice.used));
        launch_ell_chains<kEllWarps>(ell_dlp_kernel<scalar_t, label_t>, a, Wc, x, flag);
      });
}

}  // namespace
}  // namespace cuda
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CUDA, m) {
  m.impl("ell_gwg_steps", &deem::cuda::ell_gwg_steps);
  m.impl("ell_dlp_steps", &deem::cuda::ell_dlp_steps);
}
