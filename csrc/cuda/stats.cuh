// Sufficient statistics of F, accumulated in one pass: the engine behind
// free_energy_backward, free_energy_soft_backward, cd_grad and cd_grad_soft.
//
// Why this shape (a two-stage, atomic-free, deterministic reduction):
//  * Rows [0, Na) come from source A (hard labels, or soft rows), rows
//    [Na, Na+Nb) from source B (hard labels) -- the concatenation [pos; neg].
//  * Rows are cut into fixed chunks (32..512 rows, chosen from the row count
//    alone so that small training batches still fill the GPU; merged further
//    when there are very many rows, to bound the partial buffers), one block
//    per chunk, independent of the GPU and of timing. Each block accumulates its chunk into
//    its own buffer of S = K*K*D*H + D*K + H*K + 1 doubles -- in shared memory
//    when it fits, else in its own slice of the global partial buffer -- and a
//    second kernel sums the buffers in chunk order. No atomics anywhere, so the
//    result is bitwise reproducible run to run (for batches of >= 264*512 rows
//    the chunks are the CPU kernels' 512-row chunks, csrc/cpu/stats.h).
//  * Inside a block, rows are processed in tiles of R rows: coalesced tile load
//    (labels -> int with bounds check, soft rows as is), hidden logits with one
//    thread per (row, hidden element), softmax / optional Philox hidden sample
//    with one thread per (row, unit), then the accumulation with one thread per
//    owned statistic -- thread (i, e) owns dW[i, :, e] for all visible states,
//    thread i owns db_v[i, :], thread e owns db_h[e] -- looping over the tile's
//    rows in order. Owners never collide, so shared-memory accumulation needs no
//    atomics and is deterministic.
//  * Statistics are in the (D, K_v, H, K_h) layout of Wt; the host permutes
//    them back to (K, K, D, H) (tiny).
#pragma once
#include "cuda/common.cuh"

namespace deem {
namespace cuda {

constexpr int64_t kChunk = 512;
constexpr int64_t kTargetBlocks = 264;
constexpr int kStatThreads = 256;

template <typename scalar_t>
struct StatArgs {
  int64_t Na, Nb;
  int D, K, H, R;
  int64_t rows_per_block;
  const scalar_t* Wt;  // (D, K_v, H*K), hard rows
  long long wt_off;
  const scalar_t* Ws;  // (K_v, D, H*K), soft rows (SOFT_A)
  long long ws_off;
  const scalar_t* bv;
  const scalar_t* bh;
  const scalar_t* grad;  // backward: row weight w = -grad[r]; nullptr: constant weights below
  double wA, wB;         // stat weights of A / B rows (cd_grad: -1/Np, +1/Nn)
  double lwA, lwB;       // loss weights (cd_grad: +1/Np, -1/Nn)
  bool sample;
  uint64_t seed, offset;
  int64_t S;
  double* partial;  // (nblocks, S)
  long long acc_off;
  scalar_t* dv;  // soft backward: (Na, K, D), or nullptr
  long long lab_off, v_off, L_off, lse_off, w_off, lw_off, f_off;
};

template <typename scalar_t, typename label_t, bool SOFT_A>
__global__ void __launch_bounds__(kStatThreads)
    stats_kernel(StatArgs<scalar_t> a, const label_t* __restrict__ labA, const scalar_t* __restrict__ vA,
                 const label_t* __restrict__ labB, int* __restrict__ flag) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int D = a.D, K = a.K, H = a.H, HK = a.H * a.K, KD = a.K * a.D;
  const int64_t DKHK = int64_t(KD) * HK;
  const scalar_t* Wt = stage(a.Wt, DKHK, a.wt_off, smem);
  const scalar_t* Ws = SOFT_A ? stage(a.Ws, DKHK, a.ws_off, smem) : nullptr;
  double* acc;
  if (a.acc_off >= 0) {
    acc = reinterpret_cast<double*>(smem + a.acc_off);
    for (int64_t k = threadIdx.x; k < a.S; k += blockDim.x) acc[k] = 0.0;
  } else {
    acc = a.partial + blockIdx.x * a.S;  // zero-initialised by the host
  }
  double* acc_bv = acc + DKHK;
  double* acc_bh = acc_bv + KD;
  double* acc_loss = acc_bh + HK;
  int* sLab = reinterpret_cast<int*>(smem + a.lab_off);
  scalar_t* sV = SOFT_A ? reinterpret_cast<scalar_t*>(smem + a.v_off) : nullptr;
  scalar_t* sL = reinterpret_cast<scalar_t*>(smem + a.L_off);
  double* sLse = reinterpret_cast<double*>(smem + a.lse_off);
  double* sW = reinterpret_cast<double*>(smem + a.w_off);
  double* sLW = reinterpret_cast<double*>(smem + a.lw_off);
  double* sF = reinterpret_cast<double*>(smem + a.f_off);

  const int64_t Ntot = a.Na + a.Nb;
  const int64_t rbeg = blockIdx.x * a.rows_per_block;
  const int64_t rend = min(Ntot, rbeg + a.rows_per_block);
  const int ntasks = D * HK + D + HK + 1;
  bool bad = false;
  for (int64_t row0 = rbeg; row0 < rend; row0 += a.R) {
    const int rows = static_cast<int>(min(static_cast<int64_t>(a.R), rend - row0));
    __syncthreads();  // staging done / previous tile consumed
    // 1. Tile load. Hard rows: labels -> int (bad -> skipped, flagged). Soft rows: K*D values.
    for (int k = threadIdx.x; k < rows * D; k += blockDim.x) {
      const int r = k / D, c = k - r * D;
      const int64_t g = row0 + r;
      int l = -1;
      if (g >= a.Na)
        l = checked_label(labB[(g - a.Na) * D + c], K, bad);
      else if (!SOFT_A)
        l = checked_label(labA[g * D + c], K, bad);
      sLab[k] = l;
    }
    if (SOFT_A) {
      for (int k = threadIdx.x; k < rows * KD; k += blockDim.x) {
        const int r = k / KD;
        const int64_t g = row0 + r;
        if (g < a.Na) sV[k] = vA[g * KD + (k - r * KD)];
      }
    }
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
      const int64_t g = row0 + r;
      const bool inA = g < a.Na;
      sW[r] = a.grad ? -static_cast<double>(a.grad[g]) : (inA ? a.wA : a.wB);
      sLW[r] = inA ? a.lwA : a.lwB;
    }
    __syncthreads();
    // 2. Hidden logits, one thread per (row, hidden element); same order of additions as the CPU rows.
    for (int k = threadIdx.x; k < rows * HK; k += blockDim.x) {
      const int r = k / HK, e = k - r * HK;
      scalar_t s = a.bh[e];
      if (SOFT_A && row0 + r < a.Na) {
        const scalar_t* vr = sV + r * KD;
        for (int li = 0; li < KD; ++li) s += vr[li] * Ws[int64_t(li) * HK + e];
      } else {
        const int* xr = sLab + r * D;
        for (int i = 0; i < D; ++i) {
          const int l = xr[i];
          if (l >= 0) s += Wt[(int64_t(i) * K + l) * HK + e];
        }
      }
      sL[k] = s;
    }
    __syncthreads();
    // 3. Softmax per (row, unit) in place; log-sum-exp kept for F. When sampling, the
    //    unit's probabilities become the one-hot Philox draw (row index = concatenated r).
    for (int u = threadIdx.x; u < rows * H; u += blockDim.x) {
      const int r = u / H, j = u - r * H;
      scalar_t* p = sL + u * K;
      sLse[u] = softmax_unit(p, K);
      if (a.sample) {
        const int m = sample_categorical(p, K, hidden_uniform(a.seed, j, row0 + r, a.offset));
        for (int q = 0; q < K; ++q) p[q] = q == m ? scalar_t(1) : scalar_t(0);
      }
    }
    __syncthreads();
    // 4. F per row (loss), and dv for soft backward rows (exact P: no sampling there).
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
      double f = 0.0;
      for (int j = 0; j < H; ++j) f += sLse[r * H + j];
      if (SOFT_A && row0 + r < a.Na) {
        const scalar_t* vr = sV + r * KD;
        for (int i = 0; i < D; ++i)
          for (int l = 0; l < K; ++l)
            f += static_cast<double>(vr[l * D + i]) * static_cast<double>(a.bv[i * K + l]);
      } else {
        const int* xr = sLab + r * D;
        for (int i = 0; i < D; ++i)
          if (xr[i] >= 0) f += static_cast<double>(a.bv[i * K + xr[i]]);
      }
      sF[r] = -f;
    }
    if (SOFT_A && a.dv != nullptr) {
      for (int k = threadIdx.x; k < rows * KD; k += blockDim.x) {
        const int r = k / KD, li = k - r * KD;
        const int64_t g = row0 + r;
        if (g >= a.Na) continue;
        const int l = li / D, i = li - l * D;
        const scalar_t* P = sL + r * HK;
        const scalar_t* wr = Ws + int64_t(li) * HK;
        double s = static_cast<double>(a.bv[i * K + l]);
        for (int c = 0; c < HK; ++c) s += static_cast<double>(P[c]) * static_cast<double>(wr[c]);
        // sW[r] = -grad[g]: dv = grad * dF/dv = -grad * s = sW * s.
        a.dv[g * KD + li] = static_cast<scalar_t>(sW[r] * s);
      }
    }
    __syncthreads();
    // 5. Accumulate; every statistic has exactly one owner thread, rows in order.
    for (int t = threadIdx.x; t < ntasks; t += blockDim.x) {
      if (t < D * HK) {
        const int i = t / HK, e = t - i * HK;
        for (int r = 0; r < rows; ++r) {
          const double wp = sW[r] * static_cast<double>(sL[r * HK + e]);
          if (SOFT_A && row0 + r < a.Na) {
            const scalar_t* vr = sV + r * KD;
            for (int l = 0; l < K; ++l) acc[(int64_t(i) * K + l) * HK + e] += static_cast<double>(vr[l * D + i]) * wp;
          } else {
            const int l = sLab[r * D + i];
            if (l >= 0) acc[(int64_t(i) * K + l) * HK + e] += wp;
          }
        }
      } else if (t < D * HK + D) {
        const int i = t - D * HK;
        for (int r = 0; r < rows; ++r) {
          if (SOFT_A && row0 + r < a.Na) {
            const scalar_t* vr = sV + r * KD;
            for (int l = 0; l < K; ++l) acc_bv[i * K + l] += sW[r] * static_cast<double>(vr[l * D + i]);
          } else {
            const int l = sLab[r * D + i];
            if (l >= 0) acc_bv[i * K + l] += sW[r];
          }
        }
      } else if (t < D * HK + D + HK) {
        const int e = t - D * HK - D;
        for (int r = 0; r < rows; ++r) acc_bh[e] += sW[r] * static_cast<double>(sL[r * HK + e]);
      } else {
        for (int r = 0; r < rows; ++r) *acc_loss += sLW[r] * sF[r];
      }
    }
  }
  if (a.acc_off >= 0) {
    __syncthreads();
    double* dst = a.partial + blockIdx.x * a.S;
    for (int64_t k = threadIdx.x; k < a.S; k += blockDim.x) dst[k] = acc[k];
  }
  raise_flag(flag, bad);
}

// out[s] = sum_b partial[b, s], b in order (one thread per statistic, coalesced).
static __global__ void sum_partials_kernel(const double* __restrict__ partial, int64_t nblocks, int64_t S,
                                    double* __restrict__ out) {
  for (int64_t s = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; s < S; s += int64_t(gridDim.x) * blockDim.x) {
    double t = partial[s];
    for (int64_t b = 1; b < nblocks; ++b) t += partial[b * S + s];
    out[s] = t;
  }
}

struct StatsOut {
  at::Tensor dW, db_v, db_h, loss;  // loss: 0-dim
};

// Runs the two stages and returns the statistics in the parameter dtype.
// labA / labB: hard rows (labA ignored when SOFT_A); vA: soft rows (SOFT_A).
template <typename scalar_t, typename label_t, bool SOFT_A>
StatsOut run_stats(const char* name, const Dims& d, const at::Tensor& W, int64_t Na, int64_t Nb,
                   const label_t* labA, const scalar_t* vA, const label_t* labB, const scalar_t* bv,
                   const scalar_t* bh, const scalar_t* grad, double wA, double wB, double lwA, double lwB, bool sample,
                   int64_t seed, int64_t offset, scalar_t* dv, int* flag) {
  const int64_t K = d.K, D = d.D, H = d.H, HK = d.HK(), KD = K * D;
  const int64_t S = KD * HK + KD + HK + 1;
  const int64_t Ntot = Na + Nb;
  auto dopt = W.options().dtype(at::kDouble);
  at::Tensor tot;
  if (Ntot == 0) {
    tot = at::zeros({S}, dopt);
  } else {
    // Fixed chunks, one block each, sized from the row count only (never from the
    // GPU): about kTargetBlocks blocks, 32..512 rows each (512 = the CPU chunk),
    // merged further when the partial buffers would exceed ~256 MB.
    const int64_t chunk = std::min<int64_t>(kChunk, std::max<int64_t>(32, ceil_div(ceil_div(Ntot, kTargetBlocks), 32) * 32));
    const int64_t nchunks = ceil_div(Ntot, chunk);
    const int64_t max_blocks = std::max<int64_t>(1, (int64_t(256) << 20) / (S * int64_t(sizeof(double))));
    const int64_t merge = ceil_div(nchunks, std::min<int64_t>(nchunks, max_blocks));
    const int64_t rows_per_block = merge * chunk;
    const int64_t nblocks = ceil_div(Ntot, rows_per_block);

    StatArgs<scalar_t> a;
    a.Na = Na;
    a.Nb = Nb;
    a.D = static_cast<int>(D);
    a.K = static_cast<int>(K);
    a.H = static_cast<int>(H);
    a.rows_per_block = rows_per_block;
    a.bv = bv;
    a.bh = bh;
    a.grad = grad;
    a.wA = wA;
    a.wB = wB;
    a.lwA = lwA;
    a.lwB = lwB;
    a.sample = sample;
    a.seed = static_cast<uint64_t>(seed);
    a.offset = static_cast<uint64_t>(offset);
    a.S = S;
    a.dv = dv;

    const at::Tensor Wt = w_il_jm(W);
    const at::Tensor Ws = SOFT_A ? w_li_jm(W) : at::Tensor();
    a.Wt = Wt.data_ptr<scalar_t>();
    a.Ws = SOFT_A ? Ws.data_ptr<scalar_t>() : nullptr;

    // Tile rows: up to 32 rows within 48 KB of per-row scratch.
    const size_t per_row = round16(D * sizeof(int)) + (SOFT_A ? round16(KD * sizeof(scalar_t)) : 0) +
                           round16(HK * sizeof(scalar_t)) + round16(H * sizeof(double)) + 3 * 16;
    int R = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(32, (48 * 1024) / per_row)));
    R = static_cast<int>(std::min<int64_t>(R, rows_per_block));
    a.R = R;
    SmemPlan plan(max_smem_optin());
    a.lab_off = plan.add(size_t(R) * D * sizeof(int));
    a.v_off = SOFT_A ? plan.add(size_t(R) * KD * sizeof(scalar_t)) : 0;
    a.L_off = plan.add(size_t(R) * HK * sizeof(scalar_t));
    a.lse_off = plan.add(size_t(R) * H * sizeof(double));
    a.w_off = plan.add(size_t(R) * sizeof(double));
    a.lw_off = plan.add(size_t(R) * sizeof(double));
    a.f_off = plan.add(size_t(R) * sizeof(double));
    TORCH_CHECK(plan.ok(), name, ": one row (D=", D, ", K=", K, ", H=", H, ") does not fit in shared memory");
    // Priority: the accumulator (read-modify-write), then the W copies (read-only, L1 also serves them).
    a.acc_off = plan.add_optional(size_t(S) * sizeof(double));
    a.wt_off = plan.add_optional(size_t(KD * HK) * sizeof(scalar_t));
    a.ws_off = SOFT_A ? plan.add_optional(size_t(KD * HK) * sizeof(scalar_t)) : -1;
    const size_t smem = plan.used;

    at::Tensor partial = a.acc_off >= 0 ? at::empty({nblocks, S}, dopt) : at::zeros({nblocks, S}, dopt);
    a.partial = partial.data_ptr<double>();
    auto kernel = stats_kernel<scalar_t, label_t, SOFT_A>;
    set_smem(kernel, smem);
    auto stream = at::cuda::getCurrentCUDAStream();
    kernel<<<static_cast<unsigned>(nblocks), kStatThreads, smem, stream>>>(a, labA, vA, labB, flag);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    tot = at::empty({S}, dopt);
    const int threads = 256;
    const int64_t grid = std::min<int64_t>(ceil_div(S, threads), int64_t(num_sms()) * 8);
    sum_partials_kernel<<<static_cast<unsigned>(grid), threads, 0, stream>>>(partial.data_ptr<double>(), nblocks, S,
                                                                              tot.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const auto st = W.scalar_type();
  StatsOut o;
  o.dW = w_from_il_jm(tot.narrow(0, 0, KD * HK).to(st), d);
  o.db_v = tot.narrow(0, KD * HK, KD).to(st, false, true).view({D, K});
  o.db_h = tot.narrow(0, KD * HK + KD, HK).to(st, false, true).view({H, K});
  o.loss = tot.narrow(0, S - 1, 1).to(st, false, true).view({});
  return o;
}

}  // namespace cuda
}  // namespace deem
