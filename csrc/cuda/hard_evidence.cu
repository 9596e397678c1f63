// hard_evidence_pass: one E-step pass of the one-hidden-unit (Dawid-Skene) model
// over hard labels (N, D), -1 = missing, in double (semantics: csrc/cpu/hard_evidence.cpp):
//   s[m] = base[m] + sum_{i present} lp[i, x_i, m],  q = softmax(s),
//   counts[x_i, m, i] += q[m],  mass += q,  nll -= logsumexp(s),  posterior = q.
// lp (D, K_l, K_m) = logp[l, m, i] - log_abstain[i, m] and base = logpi + sum_i
// log_abstain[i, :] (or the plain transposed logp and logpi when missingness is
// ignorable) are made on the host with torch ops (tiny), so a row costs
// O(D + present labels * K) whatever the missingness model.
//
// Why this shape (the atomic-free, deterministic two-stage reduction of stats.cuh):
//  * Rows are cut into fixed chunks (32..512 rows, from N alone; merged when the
//    partial buffers would pass ~256 MB), one block per chunk. Each block
//    accumulates its rows into its own buffer of S = D*K*K + K + 1 doubles
//    [counts (D, K_l, K_m) | mass (K) | nll] -- in shared memory when it fits,
//    else in its slice of a global partial buffer zeroed by the host -- and a
//    second kernel sums the block buffers in chunk order. No atomics anywhere:
//    the result is bitwise reproducible run to run, on any GPU.
//  * Inside a block, rows go in tiles of R rows. Phase 1: one thread per row
//    reads its labels (bounds-checked: a label outside [-1, K) is skipped and
//    flags the call, which raises on the host), sums s in the CPU kernel's order,
//    and leaves q and logsumexp(s) in shared memory (q transposed, [m][r], so the
//    per-row loops are bank-conflict free). Phase 2: the tile's posterior rows
//    are stored coalesced. Phase 3: every statistic has one owner thread --
//    thread (i, m) owns counts[i, :, m] for all labels l, thread m owns mass[m],
//    one thread owns nll -- looping over the tile's rows in order (labels re-read,
//    coalesced across i, from global/L1). Owners never collide, so the shared
//    accumulation needs no atomics and each statistic is summed in row order.
#include "common/evidence.h"
#include "cuda/stats.cuh"

namespace deem {
namespace cuda {
namespace {

constexpr int kHardThreads = 256;

struct HardArgs {
  int64_t N, rows_per_block, S;
  int D, K, R;
  bool want_counts;
  const double* lp;  // (D, K_l, K_m)
  long long lp_off;  // shared-memory offset of the staged lp, -1: read the global copy
  const double* base;  // (K,)
  double* partial;     // (nblocks, S)
  double* post;        // (N, K) or nullptr
  long long acc_off, q_off, lse_off;
};

template <typename label_t>
__global__ void __launch_bounds__(kHardThreads)
    hard_evidence_kernel(HardArgs a, const label_t* __restrict__ labels, int* __restrict__ flag) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int D = a.D, K = a.K, R = a.R;
  const int KK = K * K;
  const int DKK = a.want_counts ? D * KK : 0;
  const double* lp = stage(a.lp, int64_t(D) * KK, a.lp_off, smem);
  double* acc;
  if (a.acc_off >= 0) {
    acc = reinterpret_cast<double*>(smem + a.acc_off);
    for (int64_t k = threadIdx.x; k < a.S; k += blockDim.x) acc[k] = 0.0;
  } else {
    acc = a.partial + blockIdx.x * a.S;  // zero-initialised by the host
  }
  double* acc_mass = acc + DKK;
  double* acc_nll = acc_mass + K;
  double* sQ = reinterpret_cast<double*>(smem + a.q_off);  // [m * R + r]
  double* sLse = reinterpret_cast<double*>(smem + a.lse_off);

  const int64_t rbeg = blockIdx.x * a.rows_per_block;
  const int64_t rend = min(a.N, rbeg + a.rows_per_block);
  const int ncount = a.want_counts ? D * K : 0;
  const int ntasks = ncount + K + 1;
  bool bad = false;
  for (int64_t row0 = rbeg; row0 < rend; row0 += R) {
    const int rows = static_cast<int>(min(static_cast<int64_t>(R), rend - row0));
    __syncthreads();  // staging done / previous tile consumed
    // 1. One thread per row: s in the CPU kernel's order, then q = softmax(s) in place.
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
      const label_t* xr = labels + (row0 + r) * D;
      double* s = sQ + r;
      for (int m = 0; m < K; ++m) s[m * R] = a.base[m];
      for (int i = 0; i < D; ++i) {
        const int l = checked_label(xr[i], K, bad);
        if (l < 0) continue;
        const double* w = lp + (i * K + l) * K;
        for (int m = 0; m < K; ++m) s[m * R] += w[m];
      }
      double mx = s[0];
      for (int m = 1; m < K; ++m) mx = mx < s[m * R] ? s[m * R] : mx;  // std::max, as the CPU kernel
      double z = 0.0;
      for (int m = 0; m < K; ++m) z += exp(s[m * R] - mx);
      const double lse = mx + log(z);
      for (int m = 0; m < K; ++m) s[m * R] = exp(s[m * R] - lse);
      sLse[r] = lse;
    }
    __syncthreads();
    // 2. Posterior rows of the tile, contiguous in (N, K): coalesced stores.
    if (a.post != nullptr) {
      double* dst = a.post + row0 * K;
      for (int k = threadIdx.x; k < rows * K; k += blockDim.x) {
        const int r = k / K, m = k - r * K;
        dst[k] = sQ[m * R + r];
      }
    }
    // 3. Accumulate; every statistic has exactly one owner thread, rows in order.
    for (int t = threadIdx.x; t < ntasks; t += blockDim.x) {
      if (t < ncount) {
        const int i = t / K, m = t - i * K;
        const label_t* xc = labels + row0 * D + i;
        double* c = acc + i * KK + m;
        const double* q = sQ + m * R;
        for (int r = 0; r < rows; ++r) {
          const int64_t l = static_cast<int64_t>(xc[int64_t(r) * D]);
          if (l >= 0 && l < K) c[l * K] += q[r];  // out-of-range labels were flagged in phase 1
        }
      } else if (t < ncount + K) {
        const int m = t - ncount;
        const double* q = sQ + m * R;
        double v = acc_mass[m];
        for (int r = 0; r < rows; ++r) v += q[r];
        acc_mass[m] = v;
      } else {
        double v = *acc_nll;
        for (int r = 0; r < rows; ++r) v -= sLse[r];
        *acc_nll = v;
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

void check_device(const char* name, const char* what, const at::Tensor& t, const at::Tensor& labels) {
  TORCH_CHECK(t.is_cuda(), name, ": expected CUDA tensors, ", what, " is on ", t.device());
  TORCH_CHECK(t.device() == labels.device(), name, ": ", what, " is on ", t.device(), " but labels are on ",
              labels.device());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> hard_evidence_pass(
    const at::Tensor& labels_, const at::Tensor& logp_, const at::Tensor& logpi_, const at::Tensor& log_abstain_,
    bool want_counts, bool want_posterior) {
  const char* name = "deem::hard_evidence_pass";
  TORCH_CHECK(labels_.is_cuda(), name, ": expected CUDA tensors, labels is on ", labels_.device());
  check_device(name, "logp", logp_, labels_);
  check_device(name, "logpi", logpi_, labels_);
  check_device(name, "log_abstain", log_abstain_, labels_);
  const c10::cuda::CUDAGuard guard(labels_.device());
  // Shape and dtype checks (the CPU kernel's, common/evidence.h) and the folded parameters.
  const EvidenceArgs ev = evidence_args(name, labels_, logp_, logpi_, log_abstain_);
  const int64_t N = ev.N, D = ev.D, K = ev.K;
  // 32-bit index arithmetic in the kernel: D*K*K (lp, counts) and D*K (owner tasks), row counts.
  TORCH_CHECK(N < (int64_t(1) << 31) && D < (int64_t(1) << 24) && K <= (int64_t(1) << 20) &&
                  D * K * K < (int64_t(1) << 31),
              name, ": labels of shape ", labels_.sizes(), " with K = ", K, " are too large for the CUDA kernel");

  const at::Tensor labels = labels_.contiguous();
  const at::Tensor &lp = ev.lp, &base = ev.base;
  const auto f64 = logp_.options();
  at::Tensor post = at::empty({want_posterior ? N : 0, K}, f64);
  const int64_t DKK = want_counts ? D * K * K : 0;
  const int64_t S = DKK + K + 1;

  at::Tensor tot;
  if (N == 0) {
    tot = at::zeros({S}, f64);
  } else {
    // Fixed chunks, one block each, from the row count only (the rule of stats.cuh).
    const int64_t chunk =
        std::min<int64_t>(kChunk, std::max<int64_t>(32, ceil_div(ceil_div(N, kTargetBlocks), 32) * 32));
    const int64_t nchunks = ceil_div(N, chunk);
    const int64_t max_blocks = std::max<int64_t>(1, (int64_t(256) << 20) / (S * int64_t(sizeof(double))));
    const int64_t merge = ceil_div(nchunks, std::min<int64_t>(nchunks, max_blocks));
    const int64_t rows_per_block = merge * chunk;
    const int64_t nblocks = ceil_div(N, rows_per_block);

    // Tile: one thread per row, up to kHardThreads rows within 48 KB of per-row scratch (q and lse).
    const size_t per_row = size_t(K + 1) * sizeof(double);
    int64_t R = std::max<int64_t>(1, std::min<int64_t>(kHardThreads, int64_t((48 * 1024) / per_row)));
    if (R >= 32) R = R / 32 * 32;
    R = std::min<int64_t>(R, rows_per_block);

    HardArgs a;
    a.N = N;
    a.rows_per_block = rows_per_block;
    a.S = S;
    a.D = static_cast<int>(D);
    a.K = static_cast<int>(K);
    a.R = static_cast<int>(R);
    a.want_counts = want_counts;
    a.lp = lp.data_ptr<double>();
    a.base = base.data_ptr<double>();
    a.post = want_posterior ? post.data_ptr<double>() : nullptr;
    SmemPlan plan(max_smem_optin());
    a.q_off = plan.add(size_t(R) * K * sizeof(double));
    a.lse_off = plan.add(size_t(R) * sizeof(double));
    TORCH_CHECK(plan.ok(), name, ": one row (K=", K, ") does not fit in shared memory");
    // Priority: the accumulator (read-modify-write), then lp (read-only, L1 also serves it).
    a.acc_off = plan.add_optional(size_t(S) * sizeof(double));
    a.lp_off = plan.add_optional(size_t(D * K * K) * sizeof(double));
    const size_t smem = plan.used;

    at::Tensor partial = a.acc_off >= 0 ? at::empty({nblocks, S}, f64) : at::zeros({nblocks, S}, f64);
    a.partial = partial.data_ptr<double>();
    at::Tensor flag = new_flag(labels);
    auto stream = at::cuda::getCurrentCUDAStream();
    DEEM_DISPATCH_LABELS(labels.scalar_type(), name, [&] {
      auto kernel = hard_evidence_kernel<label_t>;
      set_smem(kernel, smem);
      kernel<<<static_cast<unsigned>(nblocks), kHardThreads, smem, stream>>>(a, labels.data_ptr<label_t>(),
                                                                             flag.data_ptr<int>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    tot = at::empty({S}, f64);
    const int threads = 256;
    const int64_t grid = std::min<int64_t>(ceil_div(S, threads), int64_t(num_sms()) * 8);
    sum_partials_kernel<<<static_cast<unsigned>(grid), threads, 0, stream>>>(partial.data_ptr<double>(), nblocks, S,
                                                                              tot.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    raise_if_flagged(flag, name);
  }
  // counts: (D, K_l, K_m) -> (K_l, K_m, D); mass and nll as tensors of their own.
  at::Tensor counts = want_counts ? tot.narrow(0, 0, DKK).view({D, K, K}).permute({1, 2, 0}).contiguous()
                                  : at::empty({0, K, D}, f64);
  at::Tensor mass = tot.narrow(0, DKK, K).clone();
  at::Tensor nll = tot.narrow(0, S - 1, 1).view({}).clone();
  return {counts, mass, nll, post};
}

}  // namespace
}  // namespace cuda
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CUDA, m) { m.impl("hard_evidence_pass", &deem::cuda::hard_evidence_pass); }
