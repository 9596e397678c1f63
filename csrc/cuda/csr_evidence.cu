// csr_evidence_pass on CUDA: hard_evidence_pass on labels stored sparse (semantics and
// argument checks: csrc/cpu/csr_evidence.cpp, common/csr.h), in double, deterministic.
//
// Three kernels, none with atomics (the result is bitwise reproducible on any GPU):
//  1. items: one thread per item sums base + its labels' lp rows in the by-item order (the
//     CPU kernel's), and leaves q = softmax(s) in a (N, K) buffer and logsumexp(s) in (N).
//     The K logits live in the item's own row of the q buffer, so any K fits.
//  2. mass and nll: fixed chunks of items (from N alone, as stats.cuh), one block each; thread
//     m < K sums q[:, m] over the chunk in item order, thread K sums -lse; then
//     sum_partials_kernel adds the chunks in order.
//  3. counts: one owner thread per (voter i, class m) walks voter i's labels in the by-voter
//     order and adds q[item, m] into counts[i, label, m]: owners never collide, no partial
//     (D, K, K) buffers, working set O(labels + N K + D K^2).
// A bad offset, voter, item or label is skipped and flags the call, which raises on the host.
#include "common/csr.h"
#include "cuda/stats.cuh"

namespace deem {
namespace cuda {
namespace {

template <typename label_t>
__global__ void csr_items_kernel(int64_t N, int64_t L, int D, int K, const int64_t* __restrict__ row_ptr,
                                 const int64_t* __restrict__ voter, const label_t* __restrict__ label,
                                 const double* __restrict__ lp, const double* __restrict__ base,
                                 double* __restrict__ q, double* __restrict__ lse_out, int* __restrict__ flag) {
  bool bad = false;
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    double* s = q + n * K;
    for (int m = 0; m < K; ++m) s[m] = base[m];
    int64_t j0 = row_ptr[n], j1 = row_ptr[n + 1];
    if (j0 < 0 || j1 < j0 || j1 > L) {
      bad = true;
      j1 = j0;  // an inconsistent span reads nothing
    }
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t i = voter[j];
      const int64_t l = static_cast<int64_t>(label[j]);
      if (i < 0 || i >= D || l < 0 || l >= K) {
        bad = true;
        continue;
      }
      const double* w = lp + (i * K + l) * K;
      for (int m = 0; m < K; ++m) s[m] += w[m];
    }
    double mx = s[0];
    for (int m = 1; m < K; ++m) mx = mx < s[m] ? s[m] : mx;  // std::max, as the CPU kernel
    double z = 0.0;
    for (int m = 0; m < K; ++m) z += exp(s[m] - mx);
    const double lse = mx + log(z);
    for (int m = 0; m < K; ++m) s[m] = exp(s[m] - lse);
    lse_out[n] = lse;
  }
  raise_flag(flag, bad);
}

__global__ void csr_mass_kernel(int64_t N, int K, int64_t rows_per_block, const double* __restrict__ q,
                                const double* __restrict__ lse, double* __restrict__ partial) {
  const int64_t r0 = blockIdx.x * rows_per_block;
  const int64_t r1 = min(N, r0 + rows_per_block);
  for (int t = threadIdx.x; t <= K; t += blockDim.x) {
    double v = 0.0;
    if (t < K) {
      for (int64_t n = r0; n < r1; ++n) v += q[n * K + t];
    } else {
      for (int64_t n = r0; n < r1; ++n) v -= lse[n];
    }
    partial[blockIdx.x * int64_t(K + 1) + t] = v;
  }
}

template <typename label_t>
__global__ void csr_counts_kernel(int64_t N, int64_t L, int D, int K, const int64_t* __restrict__ col_ptr,
                                  const int64_t* __restrict__ col_row, const label_t* __restrict__ col_label,
                                  const double* __restrict__ q, double* __restrict__ counts, int* __restrict__ flag) {
  bool bad = false;
  const int64_t tasks = int64_t(D) * K;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < tasks; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / K;
    const int m = static_cast<int>(t - i * K);
    int64_t j0 = col_ptr[i], j1 = col_ptr[i + 1];
    if (j0 < 0 || j1 < j0 || j1 > L) {
      bad = true;
      j1 = j0;
    }
    double* c = counts + i * K * K + m;  // counts[i, l, m] = c[l * K]
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t n = col_row[j];
      const int64_t l = static_cast<int64_t>(col_label[j]);
      if (n < 0 || n >= N || l < 0 || l >= K) {
        bad = true;
        continue;
      }
      c[l * K] += q[n * K + m];
    }
  }
  raise_flag(flag, bad);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> csr_evidence_pass(
    const at::Tensor& row_ptr_, const at::Tensor& voter_, const at::Tensor& label_, const at::Tensor& col_ptr_,
    const at::Tensor& col_row_, const at::Tensor& col_label_, const at::Tensor& logp, const at::Tensor& logpi,
    const at::Tensor& log_abstain, bool want_counts, bool want_posterior) {
  const char* name = "deem::csr_evidence_pass";
  for (const at::Tensor* t : {&row_ptr_, &voter_, &label_, &logp, &logpi, &log_abstain})
    TORCH_CHECK(t->is_cuda() && t->device() == voter_.device(), name,
                ": expected CUDA tensors on one device (", voter_.device(), "), got one on ", t->device());
  if (want_counts)
    for (const at::Tensor* t : {&col_ptr_, &col_row_, &col_label_})
      TORCH_CHECK(t->is_cuda() && t->device() == voter_.device(), name,
                  ": expected CUDA tensors on one device (", voter_.device(), "), got one on ", t->device());
  const c10::cuda::CUDAGuard guard(voter_.device());
  const CsrArgs a = csr_args(name, row_ptr_, voter_, label_, col_ptr_, col_row_, col_label_, logp, logpi,
                             log_abstain, want_counts);
  const int64_t N = a.N, D = a.D, K = a.K, L = a.L;
  TORCH_CHECK(D < (int64_t(1) << 31) && K <= (int64_t(1) << 20) && D * K * K < (int64_t(1) << 40), name,
              ": D = ", D, ", K = ", K, " are too large for the CUDA kernel");
  const auto f64 = logp.options();
  const at::Tensor row_ptr = row_ptr_.contiguous(), voter = voter_.contiguous(), label = label_.contiguous();
  at::Tensor q = at::empty({N, K}, f64);
  at::Tensor lse = at::empty({N}, f64);
  at::Tensor counts = at::zeros({want_counts ? D : 0, K, K}, f64);
  at::Tensor tot = at::zeros({K + 1}, f64);
  at::Tensor flag = new_flag(voter);
  auto stream = at::cuda::getCurrentCUDAStream();
  const int threads = 256;
  const int64_t max_grid = int64_t(num_sms()) * 8;
  DEEM_DISPATCH_LABELS(label.scalar_type(), name, [&] {
    if (N > 0) {
      const int64_t grid = std::max<int64_t>(1, std::min<int64_t>(ceil_div(N, threads), max_grid));
      csr_items_kernel<label_t><<<static_cast<unsigned>(grid), threads, 0, stream>>>(
          N, L, static_cast<int>(D), static_cast<int>(K), row_ptr.data_ptr<int64_t>(), voter.data_ptr<int64_t>(),
          label.data_ptr<label_t>(), a.lp.data_ptr<double>(), a.base.data_ptr<double>(), q.data_ptr<double>(),
          lse.data_ptr<double>(), flag.data_ptr<int>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      // Fixed chunks of items, from N alone.
      const int64_t chunk =
          std::min<int64_t>(kChunk, std::max<int64_t>(32, ceil_div(ceil_div(N, kTargetBlocks), 32) * 32));
      const int64_t nblocks = ceil_div(N, chunk);
      at::Tensor partial = at::empty({nblocks, K + 1}, f64);
      const int mass_threads = static_cast<int>(std::min<int64_t>(256, ((K + 1 + 31) / 32) * 32));
      csr_mass_kernel<<<static_cast<unsigned>(nblocks), mass_threads, 0, stream>>>(
          N, static_cast<int>(K), chunk, q.data_ptr<double>(), lse.data_ptr<double>(), partial.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const int64_t sgrid = std::min<int64_t>(ceil_div(K + 1, threads), max_grid);
      sum_partials_kernel<<<static_cast<unsigned>(sgrid), threads, 0, stream>>>(partial.data_ptr<double>(), nblocks,
                                                                                K + 1, tot.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (want_counts && D > 0) {
      const at::Tensor col_ptr = col_ptr_.contiguous(), col_row = col_row_.contiguous();
      const at::Tensor col_label = col_label_.contiguous();
      const int64_t grid = std::max<int64_t>(1, std::min<int64_t>(ceil_div(D * K, threads), max_grid));
      csr_counts_kernel<label_t><<<static_cast<unsigned>(grid), threads, 0, stream>>>(
          N, L, static_cast<int>(D), static_cast<int>(K), col_ptr.data_ptr<int64_t>(), col_row.data_ptr<int64_t>(),
          col_label.data_ptr<label_t>(), q.data_ptr<double>(), counts.data_ptr<double>(), flag.data_ptr<int>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  raise_if_flagged(flag, name, "sparse index or label");
  return {want_counts ? counts.permute({1, 2, 0}).contiguous() : at::empty({0, K, D}, f64),
          tot.narrow(0, 0, K).clone(), tot.narrow(0, K, 1).view({}).clone(),
          want_posterior ? q : at::empty({0, K}, f64)};
}

}  // namespace
}  // namespace cuda
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CUDA, m) { m.impl("csr_evidence_pass", &deem::cuda::csr_evidence_pass); }
