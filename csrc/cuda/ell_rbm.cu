// ell_hidden_probs, ell_free_energy and ell_cd_grad: hidden_probs, free_energy and cd_grad on
// padded rows (cuda/ell.cuh), at the cost of the present slots (nothing of size B x D is formed).
//
// Why this shape:
//  * Rows: the row-tile kernel of tile.cuh, reading slots instead of D labels. A block of 256
//    threads owns R consecutive rows at a time (grid-stride over tiles); the tile's slots are
//    loaded coalesced (a row's S slots are contiguous), checked, and kept in shared memory as one
//    int key v * K + l per slot (-1: empty); one thread per (row, hidden element) gather-sums
//    Wt[key, :] over the row's slots in slot order -- the dense kernels' order when a row's voters
//    ascend -- into a shared logit tile; then one thread per (row, unit) does the softmax /
//    log-sum-exp. Long rows go in chunks of SC slots (the logits accumulate across chunks in the
//    same order), so any S fits. The free energy adds b_v after the log-sum-exps, as the dense
//    kernels do (from the shared keys when the row fit in one chunk, else re-read).
//  * ell_cd_grad, atomic-free and deterministic: the tile kernel, run on pos then neg (Philox row
//    index = the row of [pos; neg], as cd_grad), writes per-row values only: WS[r, e] = w_r *
//    S_r[e] (double; S = P or its one-hot sample, w = -1/Np or +1/Nn) and w'_r * F_r (loss
//    weights +1/Np, -1/Nn). db_h = sum_r WS[r] and the loss = sum_r w'_r F_r are at::sum's
//    (fixed-order reductions). dW and db_v are reduced per voter: the present slots of [pos; neg]
//    (flattened in row order) are stable-sorted by voter (at::sort, empty / bad slots keyed D, at
//    the end), at::searchsorted gives each voter's segment, and one owner thread per (voter i,
//    hidden element e) walks its segment in row order adding WS[r, e] into dW[i, l_r, e] (all l of
//    (i, e) are its own), one per voter i into db_v[i, :]. Owners never collide: no atomics, the
//    same sums in the same order on every run. Memory O(B * S + B * H * K) plus the parameter-sized
//    accumulators; cost O(present slots * H * K) plus O(D * H * K) for the zeroed outputs.
// Bad entries (a label outside [-1, K), a present slot's voter outside [0, D)) are treated as
// empty and flagged; ell_hidden_probs / ell_free_energy read the flag (a sync) and raise, the
// training op ell_cd_grad only when DEEM_CHECK_KERNELS=1.
#include "cuda/ell.cuh"

namespace deem {
namespace cuda {
namespace {

enum EllMode { kEllProbs = 0, kEllFree = 1, kEllStats = 2 };
constexpr int kEllThreads = 256;

template <typename scalar_t>
struct EllTileArgs {
  int64_t N, S;  // rows of this launch, slots per row
  int D, K, H, R, SC;
  const scalar_t* Wt;  // (D, K_v, H*K)
  long long wt_off;    // shared-memory offset of Wt, -1: read the global copy
  const scalar_t* bv;  // (D, K) (free energy / stats)
  const scalar_t* bh;  // (H, K)
  long long key_off, L_off, lse_off;
  // kEllStats: Philox row index of this launch's row 0, stat / loss weights, hidden sampling.
  int64_t row_base;
  double w, lw;
  bool sample;
  uint64_t seed, offset;
};

// out: kEllProbs (N, H*K) probabilities, kEllFree (N) free energies (parameter dtype);
// kEllStats: ws_out (N, H*K) = w * S_r and lf_out (N) = lw * F_r, double.
template <typename scalar_t, typename label_t, int MODE>
__global__ void __launch_bounds__(kEllThreads)
    ell_tile_kernel(EllTileArgs<scalar_t> a, const int64_t* __restrict__ voter, const label_t* __restrict__ labels,
                    scalar_t* __restrict__ out, double* __restrict__ ws_out, double* __restrict__ lf_out,
                    int* __restrict__ flag) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int D = a.D, K = a.K, H = a.H, HK = a.H * a.K;
  const int64_t S = a.S;
  const scalar_t* Wt = stage(a.Wt, int64_t(D) * K * HK, a.wt_off, smem);
  int* sKey = reinterpret_cast<int*>(smem + a.key_off);
  scalar_t* sL = reinterpret_cast<scalar_t*>(smem + a.L_off);
  double* sLse = reinterpret_cast<double*>(smem + a.lse_off);
  const bool one_chunk = S <= a.SC;
  bool bad = false;
  const int64_t ntiles = ceil_div(a.N, a.R);
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    const int64_t row0 = t * a.R;
    const int rows = static_cast<int>(min(static_cast<int64_t>(a.R), a.N - row0));
    __syncthreads();  // Wt staged / previous tile consumed
    for (int k = threadIdx.x; k < rows * HK; k += blockDim.x) sL[k] = a.bh[k % HK];
    for (int64_t c0 = 0; c0 < S; c0 += a.SC) {
      const int sc = static_cast<int>(min(static_cast<int64_t>(a.SC), S - c0));
      __syncthreads();  // previous chunk's keys consumed
      for (int k = threadIdx.x; k < rows * sc; k += blockDim.x) {
        const int r = k / sc, s = k - r * sc;
        int v = 0;
        const int l = ell_slot(voter, labels, (row0 + r) * S + c0 + s, K, D, v, bad);
        sKey[k] = l >= 0 ? v * K + l : -1;
      }
      __syncthreads();
      // Same thread -> k mapping as the initialisation: each thread updates its own logits.
      for (int k = threadIdx.x; k < rows * HK; k += blockDim.x) {
        const int r = k / HK, e = k - r * HK;
        const int* keys = sKey + r * sc;
        scalar_t acc = sL[k];
        for (int s = 0; s < sc; ++s) {
          const int key = keys[s];
          if (key >= 0) acc += Wt[int64_t(key) * HK + e];
        }
        sL[k] = acc;
      }
    }
    __syncthreads();
    if (MODE == kEllProbs) {
      for (int u = threadIdx.x; u < rows * H; u += blockDim.x) softmax_unit(sL + u * K, K);
      __syncthreads();
      scalar_t* dst = out + row0 * HK;
      for (int k = threadIdx.x; k < rows * HK; k += blockDim.x) dst[k] = sL[k];
    } else {
      if (MODE == kEllStats) {
        // Softmax per (row, unit), its log-sum-exp kept for F; with sampling the unit's probabilities
        // become the one-hot inverse-CDF draw of (unit j, row of [pos; neg]), as cd_grad.
        for (int u = threadIdx.x; u < rows * H; u += blockDim.x) {
          const int r = u / H, j = u - r * H;
          scalar_t* p = sL + u * K;
          sLse[u] = softmax_unit(p, K);
          if (a.sample) {
            const int m = sample_categorical(p, K, hidden_uniform(a.seed, j, a.row_base + row0 + r, a.offset));
            for (int q = 0; q < K; ++q) p[q] = q == m ? scalar_t(1) : scalar_t(0);
          }
        }
        __syncthreads();
        double* dst = ws_out + row0 * HK;
        for (int k = threadIdx.x; k < rows * HK; k += blockDim.x) dst[k] = a.w * static_cast<double>(sL[k]);
      }
      // F per row: the units' log-sum-exps, then b_v of the present slots in slot order (dense order).
      for (int r = threadIdx.x; r < rows; r += blockDim.x) {
        double f = 0.0;
        if (MODE == kEllStats) {
          for (int j = 0; j < H; ++j) f += sLse[r * H + j];
        } else {
          const scalar_t* Lr = sL + r * HK;
          for (int j = 0; j < H; ++j) f += lse_unit(Lr + j * K, K);
        }
        if (one_chunk) {
          const int* keys = sKey + r * S;
          for (int64_t s = 0; s < S; ++s) {
            const int key = keys[s];
            if (key >= 0) f += static_cast<double>(a.bv[key]);
          }
        } else {
          for (int64_t s = 0; s < S; ++s) {  // long rows: re-read (bad entries were flagged by the loads)
            int v = 0;
            const int l = ell_slot(voter, labels, (row0 + r) * S + s, K, D, v, bad);
            if (l >= 0) f += static_cast<double>(a.bv[int64_t(v) * K + l]);
          }
        }
        if (MODE == kEllStats)
          lf_out[row0 + r] = a.lw * (-f);
        else
          out[row0 + r] = static_cast<scalar_t>(-f);
      }
    }
  }
  raise_flag(flag, bad);
}

// Launches the tile kernel over N padded rows of S slots (no-op for N == 0).
template <typename scalar_t, typename label_t, int MODE>
void launch_ell_tile(const char* name, const Dims& d, int64_t N, int64_t S, const at::Tensor& Wt, const scalar_t* bv,
                     const scalar_t* bh, const int64_t* voter, const label_t* labels, scalar_t* out, double* ws_out,
                     double* lf_out, int64_t row_base, double w, double lw, bool sample, int64_t seed, int64_t offset,
                     int* flag) {
  if (N == 0) return;
  const int64_t HK = d.HK();
  // Tile: up to 64 rows of logits (and log-sum-exps) within 32 KB; keys: up to 8192 slots (32 KB).
  const size_t per_row = round16(HK * sizeof(scalar_t)) + (MODE == kEllStats ? round16(d.H * sizeof(double)) : 0);
  int R = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(64, (32 * 1024) / std::max<size_t>(per_row, 16))));
  R = static_cast<int>(std::min<int64_t>(R, N));
  const int SC = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(S, 8192 / R)));
  EllTileArgs<scalar_t> a;
  a.N = N;
  a.S = S;
  a.D = static_cast<int>(d.D);
  a.K = static_cast<int>(d.K);
  a.H = static_cast<int>(d.H);
  a.R = R;
  a.SC = SC;
  a.bv = bv;
  a.bh = bh;
  a.row_base = row_base;
  a.w = w;
  a.lw = lw;
  a.sample = sample;
  a.seed = static_cast<uint64_t>(seed);
  a.offset = static_cast<uint64_t>(offset);
  SmemPlan plan(max_smem_optin());
  a.L_off = plan.add(size_t(R) * HK * sizeof(scalar_t));
  a.lse_off = MODE == kEllStats ? plan.add(size_t(R) * d.H * sizeof(double)) : 0;
  a.key_off = plan.add(size_t(R) * SC * sizeof(int));
  TORCH_CHECK(plan.ok(), name, ": one row (H*K=", HK, ") does not fit in shared memory");
  // Wt is staged only when small: a block reads just the rows of its slots, so staging a large Wt
  // would cost O(D) per block for nothing (it is read through L1 instead).
  a.Wt = Wt.data_ptr<scalar_t>();
  const size_t wt_bytes = size_t(d.D) * d.K * HK * sizeof(scalar_t);
  a.wt_off = wt_bytes <= 48 * 1024 ? plan.add_optional(wt_bytes) : -1;
  const size_t smem = plan.used;
  auto kernel = ell_tile_kernel<scalar_t, label_t, MODE>;
  set_smem(kernel, smem);
  const int64_t ntiles = ceil_div(N, R);
  const int64_t grid = std::min<int64_t>(ntiles, int64_t(blocks_per_sm(kernel, kEllThreads, smem)) * num_sms());
  kernel<<<static_cast<unsigned>(grid), kEllThreads, smem, at::cuda::getCurrentCUDAStream()>>>(
      a, voter, labels, out, ws_out, lf_out, flag);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Sort keys of the flattened slots of [pos; neg] (pos slots k < Lp, row k / Sp; neg slots after,
// row Np + (k - Lp) / Sn): the voter of a present, in-range slot, else D (sorted last, no segment).
template <typename label_t>
__global__ void ell_keys_kernel(int64_t Lp, int64_t Ln, int D, int K, const int64_t* __restrict__ pv,
                                const label_t* __restrict__ pl, const int64_t* __restrict__ nv,
                                const label_t* __restrict__ nl, int32_t* __restrict__ key, int* __restrict__ flag) {
  bool bad = false;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < Lp + Ln; k += int64_t(gridDim.x) * blockDim.x) {
    int v = 0;
    const int l = k < Lp ? ell_slot(pv, pl, k, K, D, v, bad) : ell_slot(nv, nl, k - Lp, K, D, v, bad);
    key[k] = l >= 0 ? v : D;
  }
  raise_flag(flag, bad);
}

// Owner threads: t < D*HK is (voter i, hidden element e) and owns dW[i, :, e] (the (D, K_v, H*K)
// layout); t = D*HK + i owns db_v[i, :]. Each walks voter i's segment [col_ptr[i], col_ptr[i+1])
// of the stable sort, i.e. its slots in row order of [pos; neg].
template <typename label_t>
__global__ void ell_by_voter_kernel(int D, int K, int HK, int64_t Np, int64_t Sp, int64_t Sn, int64_t Lp,
                                    const int64_t* __restrict__ col_ptr, const int64_t* __restrict__ perm,
                                    const label_t* __restrict__ pl, const label_t* __restrict__ nl,
                                    const double* __restrict__ WS, double wp, double wn, double* __restrict__ accW,
                                    double* __restrict__ accB) {
  const int64_t nW = int64_t(D) * HK, tasks = nW + D;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < tasks; t += int64_t(gridDim.x) * blockDim.x) {
    const bool is_w = t < nW;
    const int i = static_cast<int>(is_w ? t / HK : t - nW);
    const int e = is_w ? static_cast<int>(t - int64_t(i) * HK) : 0;
    const int64_t j0 = col_ptr[i], j1 = col_ptr[i + 1];
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t k = perm[j];
      int64_t r, l;
      if (k < Lp) {
        r = k / Sp;
        l = static_cast<int64_t>(pl[k]);
      } else {
        r = Np + (k - Lp) / Sn;
        l = static_cast<int64_t>(nl[k - Lp]);
      }
      if (l < 0 || l >= K) continue;  // cannot happen: keyed D by ell_keys_kernel
      if (is_w)
        accW[(int64_t(i) * K + l) * HK + e] += WS[r * HK + e];
      else
        accB[int64_t(i) * K + l] += r < Np ? wp : wn;
    }
  }
}

at::Tensor ell_hidden_probs(const at::Tensor& voter_, const at::Tensor& labels_, const at::Tensor& W_,
                            const at::Tensor& b_h_) {
  const char* name = "deem::ell_hidden_probs";
  const Dims d = check_params(name, W_, nullptr, b_h_);
  check_ell(name, "labels", voter_, labels_, W_, d);
  const c10::cuda::CUDAGuard guard(W_.device());
  const at::Tensor voter = voter_.contiguous(), labels = labels_.contiguous(), W = W_.contiguous(),
                   b_h = b_h_.contiguous();
  const int64_t B = labels.size(0), S = labels.size(1);
  at::Tensor out = at::empty({B, d.H, d.K}, W.options());
  if (B == 0 || d.HK() == 0) return out;
  at::Tensor flag = new_flag(W);
  const at::Tensor Wt = w_il_jm(W);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    DEEM_DISPATCH_LABELS(labels.scalar_type(), name, [&] {
      launch_ell_tile<scalar_t, label_t, kEllProbs>(name, d, B, S, Wt, nullptr, b_h.data_ptr<scalar_t>(),
                                                    voter.data_ptr<int64_t>(), labels.data_ptr<label_t>(),
                                                    out.data_ptr<scalar_t>(), nullptr, nullptr, 0, 0.0, 0.0, false, 0,
                                                    0, flag.data_ptr<int>());
    });
  });
  // Off the training hot path (prediction / analysis): one small sync to report bad entries.
  raise_if_ell_flagged(flag, name);
  return out;
}

at::Tensor ell_free_energy(const at::Tensor& voter_, const at::Tensor& labels_, const at::Tensor& W_,
                           const at::Tensor& b_v_, const at::Tensor& b_h_) {
  const char* name = "deem::ell_free_energy";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_ell(name, "labels", voter_, labels_, W_, d);
  const c10::cuda::CUDAGuard guard(W_.device());
  const at::Tensor voter = voter_.contiguous(), labels = labels_.contiguous(), W = W_.contiguous(),
                   b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  const int64_t B = labels.size(0), S = labels.size(1);
  at::Tensor out = at::empty({B}, W.options());
  if (B == 0) return out;
  at::Tensor flag = new_flag(W);
  const at::Tensor Wt = w_il_jm(W);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    DEEM_DISPATCH_LABELS(labels.scalar_type(), name, [&] {
      launch_ell_tile<scalar_t, label_t, kEllFree>(name, d, B, S, Wt, b_v.data_ptr<scalar_t>(),
                                                   b_h.data_ptr<scalar_t>(), voter.data_ptr<int64_t>(),
                                                   labels.data_ptr<label_t>(), out.data_ptr<scalar_t>(), nullptr,
                                                   nullptr, 0, 0.0, 0.0, false, 0, 0, flag.data_ptr<int>());
    });
  });
  raise_if_ell_flagged(flag, name);
  return out;
}

using Result = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Result ell_cd_grad(const at::Tensor& pos_voter_, const at::Tensor& pos_, const at::Tensor& neg_voter_,
                   const at::Tensor& neg_, const at::Tensor& W_, const at::Tensor& b_v_, const at::Tensor& b_h_,
                   bool sample_hidden, int64_t seed, int64_t offset) {
  const char* name = "deem::ell_cd_grad";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_ell(name, "pos", pos_voter_, pos_, W_, d);
  check_ell(name, "neg", neg_voter_, neg_, W_, d);
  const int64_t Np = pos_.size(0), Nn = neg_.size(0);
  TORCH_CHECK(Np > 0 && Nn > 0, name, ": pos and neg must each have at least one row, got ", Np, " and ", Nn);
  TORCH_CHECK(Np + Nn < (int64_t(1) << 32), name, ": too many rows for the Philox row index");
  const c10::cuda::CUDAGuard guard(W_.device());
  const at::Tensor pv = pos_voter_.contiguous(), nv = neg_voter_.contiguous();
  at::Tensor pos = pos_.contiguous(), neg = neg_.contiguous();
  if (pos.scalar_type() != neg.scalar_type()) {  // widen, never narrow (narrowing could hide bad labels)
    pos = pos.to(at::kLong);
    neg = neg.to(at::kLong);
  }
  const at::Tensor W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  const int64_t K = d.K, D = d.D, H = d.H, HK = d.HK(), Ntot = Np + Nn;
  const int64_t Sp = pos.size(1), Sn = neg.size(1), Lp = Np * Sp, Ln = Nn * Sn;
  const auto dopt = W.options().dtype(at::kDouble);
  at::Tensor flag = new_flag(W);
  at::Tensor WS = at::empty({Ntot, HK}, dopt);  // w_r * S_r
  at::Tensor LF = at::empty({Ntot}, dopt);      // lw_r * F_r
  at::Tensor accW = at::zeros({D * K * HK}, dopt), accB = at::zeros({D * K}, dopt);
  const double ip = 1.0 / static_cast<double>(Np), in = 1.0 / static_cast<double>(Nn);
  const at::Tensor Wt = w_il_jm(W);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    DEEM_DISPATCH_LABELS(pos.scalar_type(), name, [&] {
      const label_t* pl = pos.data_ptr<label_t>();
      const label_t* nl = neg.data_ptr<label_t>();
      const scalar_t* bv = b_v.data_ptr<scalar_t>();
      const scalar_t* bh = b_h.data_ptr<scalar_t>();
      double* ws = WS.data_ptr<double>();
      double* lf = LF.data_ptr<double>();
      int* fp = flag.data_ptr<int>();
      // Per-row values: pos rows are rows [0, Np) of [pos; neg], neg rows [Np, Np + Nn).
      launch_ell_tile<scalar_t, label_t, kEllStats>(name, d, Np, Sp, Wt, bv, bh, pv.data_ptr<int64_t>(), pl, nullptr,
                                                    ws, lf, 0, -ip, ip, sample_hidden, seed, offset, fp);
      launch_ell_tile<scalar_t, label_t, kEllStats>(name, d, Nn, Sn, Wt, bv, bh, nv.data_ptr<int64_t>(), nl, nullptr,
                                                    ws + Np * HK, lf + Np, Np, in, -in, sample_hidden, seed, offset,
                                                    fp);
      if (Lp + Ln > 0 && D > 0) {
        // Present slots by voter: a stable sort keeps each voter's slots in row order.
        at::Tensor key = at::empty({Lp + Ln}, W.options().dtype(at::kInt));
        const int threads = 256;
        const int64_t kgrid = std::max<int64_t>(1, std::min<int64_t>(ceil_div(Lp + Ln, threads), int64_t(num_sms()) * 8));
        ell_keys_kernel<label_t><<<static_cast<unsigned>(kgrid), threads, 0, stream>>>(
            Lp, Ln, static_cast<int>(D), static_cast<int>(K), pv.data_ptr<int64_t>(), pl, nv.data_ptr<int64_t>(), nl,
            key.data_ptr<int32_t>(), fp);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        const auto sorted = at::sort(key, /*stable=*/true, /*dim=*/0, /*descending=*/false);
        const at::Tensor& skey = std::get<0>(sorted);
        const at::Tensor perm = std::get<1>(sorted).contiguous();
        const at::Tensor col_ptr = at::searchsorted(skey, at::arange(D + 1, key.options())).contiguous();  // int64
        const int64_t tasks = D * HK + D;
        const int64_t vgrid = std::max<int64_t>(1, std::min<int64_t>(ceil_div(tasks, threads), int64_t(num_sms()) * 8));
        ell_by_voter_kernel<label_t><<<static_cast<unsigned>(vgrid), threads, 0, stream>>>(
            static_cast<int>(D), static_cast<int>(K), static_cast<int>(HK), Np, Sp, Sn, Lp,
            col_ptr.data_ptr<int64_t>(), perm.data_ptr<int64_t>(), pl, nl, ws, -ip, in, accW.data_ptr<double>(),
            accB.data_ptr<double>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  });
  const auto st = W.scalar_type();
  at::Tensor dW = w_from_il_jm(accW.to(st), d);
  at::Tensor db_v = accB.to(st).view({D, K});
  at::Tensor db_h = WS.sum(0).to(st, false, true).view({H, K});
  at::Tensor loss = LF.sum().to(st, false, true).view({});
  if (check_kernels_env()) raise_if_ell_flagged(flag, name);
  return {dW, db_v, db_h, loss};
}

}  // namespace
}  // namespace cuda
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CUDA, m) {
  m.impl("ell_hidden_probs", &deem::cuda::ell_hidden_probs);
  m.impl("ell_free_energy", &deem::cuda::ell_free_energy);
  m.impl("ell_cd_grad", &deem::cuda::ell_cd_grad);
}
