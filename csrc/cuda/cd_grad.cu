// cd_grad / cd_grad_soft: d/dtheta [mean F(pos) - mean F(neg)] and that loss in
// one pass over the concatenated rows [pos; neg].
//
// Why this shape: same reduction as the backward ops -- the atomic-free
// two-stage engine of stats.cuh (fixed 512-row chunks, one block each, owner-
// computes accumulation in shared memory, chunk buffers summed in order), with
// constant row weights (-1/Np for pos, +1/Nn for neg; loss weights +1/Np,
// -1/Nn). With sample_hidden, the (row, unit) thread that does the softmax
// replaces P[j, :] by the one-hot inverse-CDF draw of
// philox_draw(seed, j, r, offset), r the row of the concatenation, so the CUDA
// samples are the CPU samples.
// Bad labels: this is the training hot path, so no sync: bad entries are
// skipped and flagged on the device; the flag is read (one .item()) only when
// DEEM_CHECK_KERNELS=1. The Python layer validates labels before calling.
#include "cuda/stats.cuh"

namespace deem {
namespace cuda {
namespace {

using Result = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Result cd_grad(const at::Tensor& pos_, const at::Tensor& neg_, const at::Tensor& W_, const at::Tensor& b_v_,
               const at::Tensor& b_h_, bool sample_hidden, int64_t seed, int64_t offset) {
  const char* name = "deem::cd_grad";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_labels(name, "pos", pos_, W_, d);
  check_labels(name, "neg", neg_, W_, d);
  const int64_t Np = pos_.size(0), Nn = neg_.size(0);
  TORCH_CHECK(Np > 0 && Nn > 0, name, ": pos and neg must each have at least one row, got ", Np, " and ", Nn);
  TORCH_CHECK(Np + Nn < (int64_t(1) << 32), name, ": too many rows for the Philox row index");
  const c10::cuda::CUDAGuard guard(W_.device());
  at::Tensor pos = pos_.contiguous(), neg = neg_.contiguous();
  if (pos.scalar_type() != neg.scalar_type()) {  // widen, never narrow (narrowing could hide bad labels)
    pos = pos.to(at::kLong);
    neg = neg.to(at::kLong);
  }
  const at::Tensor W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  at::Tensor flag = new_flag(W);
  StatsOut o;
  const double ip = 1.0 / static_cast<double>(Np), in = 1.0 / static_cast<double>(Nn);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    DEEM_DISPATCH_LABELS(pos.scalar_type(), name, [&] {
      o = run_stats<scalar_t, label_t, false>(name, d, W, Np, Nn, pos.data_ptr<label_t>(), nullptr,
                                              neg.data_ptr<label_t>(), b_v.data_ptr<scalar_t>(),
                                              b_h.data_ptr<scalar_t>(), nullptr, -ip, in, ip, -in, sample_hidden, seed,
                                              offset, nullptr, flag.data_ptr<int>());
    });
  });
  if (check_kernels_env()) raise_if_flagged(flag, name);
  return {o.dW, o.db_v, o.db_h, o.loss};
}

Result cd_grad_soft(const at::Tensor& pos_, const at::Tensor& neg_, const at::Tensor& W_, const at::Tensor& b_v_,
                    const at::Tensor& b_h_, bool sample_hidden, int64_t seed, int64_t offset) {
  const char* name = "deem::cd_grad_soft";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_soft(name, "pos", pos_, W_, d);
  check_labels(name, "neg", neg_, W_, d);
  const int64_t Np = pos_.size(0), Nn = neg_.size(0);
  TORCH_CHECK(Np > 0 && Nn > 0, name, ": pos and neg must each have at least one row, got ", Np, " and ", Nn);
  TORCH_CHECK(Np + Nn < (int64_t(1) << 32), name, ": too many rows for the Philox row index");
  const c10::cuda::CUDAGuard guard(W_.device());
  const at::Tensor pos = pos_.contiguous(), neg = neg_.contiguous();
  const at::Tensor W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  at::Tensor flag = new_flag(W);
  StatsOut o;
  const double ip = 1.0 / static_cast<double>(Np), in = 1.0 / static_cast<double>(Nn);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    DEEM_DISPATCH_LABELS(neg.scalar_type(), name, [&] {
      o = run_stats<scalar_t, label_t, true>(name, d, W, Np, Nn, nullptr, pos.data_ptr<scalar_t>(),
                                             neg.data_ptr<label_t>(), b_v.data_ptr<scalar_t>(),
                                             b_h.data_ptr<scalar_t>(), nullptr, -ip, in, ip, -in, sample_hidden, seed,
                                             offset, nullptr, flag.data_ptr<int>());
    });
  });
  if (check_kernels_env()) raise_if_flagged(flag, name);
  return {o.dW, o.db_v, o.db_h, o.loss};
}

}  // namespace
}  // namespace cuda
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CUDA, m) {
  m.impl("cd_grad", &deem::cuda::cd_grad);
  m.impl("cd_grad_soft", &deem::cuda::cd_grad_soft);
}
