// What the one-warp-per-chain sampler kernels (GWG, DLP) share: their common
// arguments, the kernel prologue (Wt/Wg staged in shared memory when they fit,
// the warp's workspace slice), the evaluation of a chain state (hidden logits
// and probabilities, f = -F, the gradient df/dx), the host-side launch
// (shared-memory plan, grid, global workspace when the slices do not fit) and
// the host op shell (checks, working copy, dispatch, optional flag read-back).
#pragma once
#include "cuda/common.cuh"

namespace deem {
namespace cuda {

// Arguments every chain kernel reads; each sampler's struct derives from it.
template <typename scalar_t>
struct ChainArgs {
  int64_t B;
  int D, K, H;
  const scalar_t* Wt;  // (D, K_v, H*K)
  long long wt_off;
  const scalar_t* Wg;  // (H*K, D, K_v)
  long long wg_off;
  const scalar_t* bv;
  const scalar_t* bh;
  int n_steps;
  uint64_t seed, offset;
  int32_t* accepted;
  unsigned char* ws_global;  // (total warps, ws_bytes) when ws_off < 0
  long long ws_off;
  long long ws_bytes;  // per warp
};

// One warp's view of the launch: staged weights, its workspace slice, its chains b = first, first + stride, ...
template <typename scalar_t>
struct ChainWarp {
  const scalar_t* Wt;
  const scalar_t* Wg;
  unsigned char* ws;
  int lane;
  int64_t first, stride;
};

// Kernel prologue: every thread of the block calls it (it ends with __syncthreads()).
template <int kWarps, typename scalar_t>
__device__ ChainWarp<scalar_t> chain_warp(const ChainArgs<scalar_t>& a, unsigned char* smem) {
  const int64_t DKHK = int64_t(a.D) * a.K * a.H * a.K;
  ChainWarp<scalar_t> w;
  w.Wt = stage(a.Wt, DKHK, a.wt_off, smem);
  w.Wg = stage(a.Wg, DKHK, a.wg_off, smem);
  __syncthreads();
  const int warp = threadIdx.x >> 5;
  w.lane = threadIdx.x & 31;
  w.first = int64_t(blockIdx.x) * kWarps + warp;
  w.stride = int64_t(gridDim.x) * kWarps;
  w.ws = a.ws_off >= 0 ? smem + a.ws_off + warp * a.ws_bytes : a.ws_global + w.first * a.ws_bytes;
  return w;
}

// Hidden probabilities P, gradient g[i, l] (present i only) at x; returns f(x) = -F(x) (double).
template <typename Args, typename scalar_t>
__device__ double eval_state(const Args& a, const int* x, scalar_t* P, scalar_t* g,
                             const scalar_t* Wt, const scalar_t* Wg, int lane) {
  const int D = a.D, K = a.K, H = a.H, HK = H * K, DK = D * K;
  for (int e = lane; e < HK; e += 32) {
    scalar_t s = a.bh[e];
    for (int i = 0; i < D; ++i) {
      const int xi = x[i];
      if (xi >= 0) s += Wt[(int64_t(i) * K + xi) * HK + e];
    }
    P[e] = s;
  }
  __syncwarp();
  double f = 0.0;
  for (int j = lane; j < H; j += 32) f += softmax_unit(P + j * K, K);
  for (int i = lane; i < D; i += 32) {
    const int xi = x[i];
    if (xi >= 0) f += static_cast<double>(a.bv[i * K + xi]);
  }
  f = warp_sum(f);
  __syncwarp();
  for (int idx = lane; idx < DK; idx += 32) {
    const int i = idx / K;
    if (x[i] < 0) continue;
    scalar_t s = a.bv[idx];
    for (int e = 0; e < HK; ++e) s += P[e] * Wg[int64_t(e) * DK + idx];
    g[idx] = s;
  }
  __syncwarp();
  return f;
}

// Host: the common arguments from the (contiguous) parameters.
template <typename scalar_t>
void fill_chain_args(ChainArgs<scalar_t>& a, int64_t B, const Dims& d, const at::Tensor& Wt, const at::Tensor& Wg,
                     const at::Tensor& b_v, const at::Tensor& b_h, int64_t n_steps, int64_t seed, int64_t offset,
                     at::Tensor& accepted) {
  a.B = B;
  a.D = static_cast<int>(d.D);
  a.K = static_cast<int>(d.K);
  a.H = static_cast<int>(d.H);
  a.Wt = Wt.data_ptr<scalar_t>();
  a.Wg = Wg.data_ptr<scalar_t>();
  a.bv = b_v.data_ptr<scalar_t>();
  a.bh = b_h.data_ptr<scalar_t>();
  a.n_steps = static_cast<int>(n_steps);
  a.seed = static_cast<uint64_t>(seed);
  a.offset = static_cast<uint64_t>(offset);
  a.accepted = accepted.data_ptr<int32_t>();
}

// Host: plans shared memory (the warps' slices of a.ws_bytes first: hottest, then Wg, then Wt),
// sizes the grid (resident blocks, grid-stride over chains) and launches.
template <int kWarps, typename Args, typename Kernel, typename label_t>
void launch_chains(Kernel kernel, Args& a, const at::Tensor& W, label_t* chains, int* flag) {
  const size_t dkhk = size_t(a.D) * a.K * a.H * a.K * W.element_size();
  SmemPlan plan(max_smem_optin());
  a.ws_off = plan.add_optional(size_t(a.ws_bytes) * kWarps);
  a.wg_off = plan.add_optional(dkhk);
  a.wt_off = plan.add_optional(dkhk);
  const size_t smem = plan.used;
  set_smem(kernel, smem);
  const int threads = kWarps * 32;
  const int64_t grid = std::min<int64_t>(ceil_div(a.B, kWarps), int64_t(blocks_per_sm(kernel, threads, smem)) * num_sms());
  at::Tensor ws_global;
  a.ws_global = nullptr;
  if (a.ws_off < 0) {
    ws_global = at::empty({grid * kWarps * a.ws_bytes}, W.options().dtype(at::kByte));
    a.ws_global = ws_global.data_ptr<uint8_t>();
  }
  kernel<<<static_cast<unsigned>(grid), threads, smem, at::cuda::getCurrentCUDAStream()>>>(a, chains, flag);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Host: the shell of the chain ops (gwg_steps, dlp_steps): argument checks, the (B,) accepted counts,
// a contiguous working copy of the chains written back after, the float / label-dtype dispatch with the
// weights in both kernel layouts, and the device-side bad-label flag, read back (a sync) only when
// DEEM_CHECK_KERNELS=1 -- the hot path does not sync. Inside the dispatch:
//   body.template operator()<scalar_t, label_t>(d, B, W, Wt, Wg, b_v, b_h, accepted, x, flag)
// with contiguous W, b_v, b_h.
template <typename Body>
at::Tensor run_chain_op(const char* name, at::Tensor& chains, const at::Tensor& W_, const at::Tensor& b_v_,
                        const at::Tensor& b_h_, int64_t n_steps, const Body& body) {
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_labels(name, "chains", chains, W_, d);
  TORCH_CHECK(n_steps >= 0 && n_steps < (int64_t(1) << 31), name, ": n_steps must be >= 0, got ", n_steps);
  const c10::cuda::CUDAGuard guard(W_.device());
  const int64_t B = chains.size(0);
  at::Tensor accepted = at::zeros({B}, chains.options().dtype(at::kInt));
  if (B == 0 || n_steps == 0) return accepted;
  const bool in_place = chains.is_contiguous();
  at::Tensor x = in_place ? chains : chains.contiguous();
  const at::Tensor W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  at::Tensor flag = new_flag(W);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    DEEM_DISPATCH_LABELS(x.scalar_type(), name, [&] {
      const at::Tensor Wt = w_il_jm(W), Wg = w_jm_il(W);
      body.template operator()<scalar_t, label_t>(d, B, W, Wt, Wg, b_v, b_h, accepted, x.data_ptr<label_t>(),
                                                  flag.data_ptr<int>());
    });
  });
  if (!in_place) chains.copy_(x);
  if (check_kernels_env()) raise_if_flagged(flag, name);
  return accepted;
}

}  // namespace cuda
}  // namespace deem
