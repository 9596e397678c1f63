// Generic row-tile forward kernel: hidden logits / probs (any H*K, hard or soft
// rows) and free energies.
//
// Shape: a block of 256 threads owns a tile of R consecutive rows at a time
// (grid-stride over tiles). Rows are row-major, so a tile's labels (R*D) and its
// output (R*H*K) are contiguous: loads and stores are coalesced by giving
// consecutive threads consecutive elements. The logits are computed by one
// thread per (row, hidden element) output -- a gather-sum over the D labels of
// the row (the label read is a shared-memory broadcast, the W read is
// Wt[i, x_i, :], contiguous across the threads of one row) -- into a shared
// tile, then one thread per (row, unit) does the softmax / log-sum-exp in place.
// The transposed W lives in shared memory when it fits the budget, otherwise it
// is read through L1 from its global copy (both via one generic pointer).
// This path serves every shape; hidden.cu has a faster thread-per-row kernel
// for the common small-H*K prediction case.
#pragma once
#include "cuda/common.cuh"

namespace deem {
namespace cuda {

enum TileMode { kLogits = 0, kProbs = 1, kFreeEnergy = 2 };

template <typename scalar_t>
struct TileArgs {
  int64_t N;
  int D, K, H, R;
  const scalar_t* Wx;  // hard: (D, K_v, H*K) [w_il_jm]; soft: (K_v, D, H*K) [w_li_jm]
  long long wx_off;    // shared-memory offset of Wx, -1: read the global copy
  const scalar_t* bv;  // (D, K) (free energy only)
  const scalar_t* bh;  // (H, K)
  long long in_off;    // tile inputs: int labels (R*D) or soft rows (R*K*D)
  long long L_off;     // tile logits (R*H*K)
};

constexpr int kTileThreads = 256;

template <typename scalar_t, typename label_t, bool SOFT, int MODE>
__global__ void __launch_bounds__(kTileThreads)
    tile_forward_kernel(TileArgs<scalar_t> a, const label_t* __restrict__ labels, const scalar_t* __restrict__ v,
                        scalar_t* __restrict__ out, int* __restrict__ flag) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int D = a.D, K = a.K, HK = a.H * a.K, KD = a.K * a.D;
  const scalar_t* W = stage(a.Wx, int64_t(KD) * HK, a.wx_off, smem);
  int* sLab = reinterpret_cast<int*>(smem + a.in_off);
  scalar_t* sV = reinterpret_cast<scalar_t*>(smem + a.in_off);
  scalar_t* sL = reinterpret_cast<scalar_t*>(smem + a.L_off);
  bool bad = false;
  const int64_t ntiles = ceil_div(a.N, a.R);
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    const int64_t row0 = t * a.R;
    const int rows = static_cast<int>(min(static_cast<int64_t>(a.R), a.N - row0));
    __syncthreads();  // W staged / previous tile consumed
    if (SOFT) {
      const scalar_t* src = v + row0 * KD;
      for (int k = threadIdx.x; k < rows * KD; k += blockDim.x) sV[k] = src[k];
    } else {
      const label_t* src = labels + row0 * D;
      for (int k = threadIdx.x; k < rows * D; k += blockDim.x) sLab[k] = checked_label(src[k], K, bad);
    }
    __syncthreads();
    for (int k = threadIdx.x; k < rows * HK; k += blockDim.x) {
      const int r = k / HK, e = k - r * HK;
      scalar_t acc = a.bh[e];
      if (SOFT) {
        const scalar_t* vr = sV + r * KD;
        for (int li = 0; li < KD; ++li) acc += vr[li] * W[int64_t(li) * HK + e];
      } else {
        const int* xr = sLab + r * D;
        for (int i = 0; i < D; ++i) {
          const int l = xr[i];
          if (l >= 0) acc += W[(int64_t(i) * K + l) * HK + e];
        }
      }
      sL[k] = acc;
    }
    __syncthreads();
    if (MODE == kFreeEnergy) {
      for (int r = threadIdx.x; r < rows; r += blockDim.x) {
        const scalar_t* Lr = sL + r * HK;
        double f = 0.0;
        for (int j = 0; j < a.H; ++j) f += lse_unit(Lr + j * K, K);
        if (SOFT) {
          const scalar_t* vr = sV + r * KD;
          for (int l = 0; l < K; ++l)
            for (int i = 0; i < D; ++i)
              f += static_cast<double>(vr[l * D + i]) * static_cast<double>(a.bv[i * K + l]);
        } else {
          const int* xr = sLab + r * D;
          for (int i = 0; i < D; ++i) {
            const int l = xr[i];
            if (l >= 0) f += static_cast<double>(a.bv[i * K + l]);
          }
        }
        out[row0 + r] = static_cast<scalar_t>(-f);
      }
    } else {
      if (MODE == kProbs) {
        for (int u = threadIdx.x; u < rows * a.H; u += blockDim.x) softmax_unit(sL + u * K, K);
        __syncthreads();
      }
      scalar_t* dst = out + row0 * HK;
      for (int k = threadIdx.x; k < rows * HK; k += blockDim.x) dst[k] = sL[k];
    }
  }
  raise_flag(flag, bad);
}

// Launches the tile kernel over N rows. W_x is the matching transposed copy
// (w_il_jm for hard rows, w_li_jm for soft rows).
template <typename scalar_t, typename label_t, bool SOFT, int MODE>
void launch_tile_forward(const char* name, const Dims& d, int64_t N, const at::Tensor& Wx, const scalar_t* bv,
                         const scalar_t* bh, const label_t* labels, const scalar_t* v, scalar_t* out, int* flag) {
  if (N == 0) return;
  const int64_t HK = d.HK(), KD = d.K * d.D;
  const size_t in_row = SOFT ? KD * sizeof(scalar_t) : d.D * sizeof(int);
  const size_t per_row = round16(in_row) + round16(HK * sizeof(scalar_t));
  const size_t limit = max_smem_optin();
  // Tile: up to 64 rows within 32 KB (at least one row, if it fits at all).
  int R = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(64, (32 * 1024) / std::max<size_t>(per_row, 1))));
  R = static_cast<int>(std::min<int64_t>(R, N));
  SmemPlan plan(limit);
  TileArgs<scalar_t> a;
  a.N = N;
  a.D = static_cast<int>(d.D);
  a.K = static_cast<int>(d.K);
  a.H = static_cast<int>(d.H);
  a.R = R;
  a.bv = bv;
  a.bh = bh;
  a.in_off = plan.add(in_row * R);
  a.L_off = plan.add(HK * sizeof(scalar_t) * R);
  TORCH_CHECK(plan.ok(), name, ": one row (D=", d.D, ", H*K=", HK, ") does not fit in shared memory");
  a.Wx = Wx.data_ptr<scalar_t>();
  a.wx_off = plan.add_optional(KD * HK * sizeof(scalar_t));
  const size_t smem = plan.used;
  auto kernel = tile_forward_kernel<scalar_t, label_t, SOFT, MODE>;
  set_smem(kernel, smem);
  const int64_t ntiles = ceil_div(N, R);
  const int64_t grid = std::min<int64_t>(ntiles, int64_t(blocks_per_sm(kernel, kTileThreads, smem)) * num_sms());
  kernel<<<static_cast<unsigned>(grid), kTileThreads, smem, at::cuda::getCurrentCUDAStream()>>>(a, labels, v, out,
                                                                                                 flag);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace deem
