// free_energy_backward / free_energy_soft_backward: sum_n grad[n] dF_n/dtheta.
//
// Why this shape: a reduction over the batch into a few thousand parameters.
// It runs on the atomic-free two-stage engine of stats.cuh (fixed 512-row
// chunks, one block per chunk, every statistic owned by one thread, buffers
// summed in chunk order), with row weight w = -grad[n]; the soft version also
// writes dv[n, l, i] = grad[n] dF_n/dv[n, l, i] from the same tile (one thread
// per (row, l, i), coalesced in the (N, K, D) layout).
// Bad labels: skipped in-kernel and reported with one small sync at the end
// (autograd backward is not the CD training hot path; cd_grad is).
#include "cuda/stats.cuh"

namespace deem {
namespace cuda {
namespace {

void check_grad(const char* name, const at::Tensor& grad, int64_t N, const at::Tensor& W) {
  check_cuda(name, "grad", grad, W);
  TORCH_CHECK(grad.dim() == 1 && grad.size(0) == N, name, ": grad must have shape (N,) = (", N, "), got ",
              grad.sizes());
  TORCH_CHECK(grad.scalar_type() == W.scalar_type(), name, ": grad dtype ", grad.scalar_type(),
              " differs from W dtype ", W.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> free_energy_backward(const at::Tensor& grad_, const at::Tensor& labels_,
                                                                    const at::Tensor& W_, const at::Tensor& b_v_,
                                                                    const at::Tensor& b_h_) {
  const char* name = "deem::free_energy_backward";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_labels(name, "labels", labels_, W_, d);
  check_grad(name, grad_, labels_.size(0), W_);
  const c10::cuda::CUDAGuard guard(W_.device());
  const at::Tensor grad = grad_.contiguous(), labels = labels_.contiguous(), W = W_.contiguous(),
                   b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  const int64_t N = labels.size(0);
  at::Tensor flag = new_flag(W);
  StatsOut o;
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    DEEM_DISPATCH_LABELS(labels.scalar_type(), name, [&] {
      o = run_stats<scalar_t, label_t, false>(name, d, W, N, 0, labels.data_ptr<label_t>(), nullptr, nullptr,
                                              b_v.data_ptr<scalar_t>(), b_h.data_ptr<scalar_t>(),
                                              grad.data_ptr<scalar_t>(), 0.0, 0.0, 0.0, 0.0, false, 0, 0, nullptr,
                                              flag.data_ptr<int>());
    });
  });
  raise_if_flagged(flag, name);
  return {o.dW, o.db_v, o.db_h};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> free_energy_soft_backward(
    const at::Tensor& grad_, const at::Tensor& v_, const at::Tensor& W_, const at::Tensor& b_v_,
    const at::Tensor& b_h_) {
  const char* name = "deem::free_energy_soft_backward";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_soft(name, "v", v_, W_, d);
  check_grad(name, grad_, v_.size(0), W_);
  const c10::cuda::CUDAGuard guard(W_.device());
  const at::Tensor grad = grad_.contiguous(), v = v_.contiguous(), W = W_.contiguous(), b_v = b_v_.contiguous(),
                   b_h = b_h_.contiguous();
  const int64_t N = v.size(0);
  at::Tensor dv = at::empty_like(v);
  at::Tensor flag = new_flag(W);  // soft rows have no labels; kept valid
  StatsOut o;
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    o = run_stats<scalar_t, int8_t, true>(name, d, W, N, 0, nullptr, v.data_ptr<scalar_t>(), nullptr,
                                          b_v.data_ptr<scalar_t>(), b_h.data_ptr<scalar_t>(),
                                          grad.data_ptr<scalar_t>(), 0.0, 0.0, 0.0, 0.0, false, 0, 0,
                                          dv.data_ptr<scalar_t>(), flag.data_ptr<int>());
  });
  return {dv, o.dW, o.db_v, o.db_h};
}

}  // namespace
}  // namespace cuda
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CUDA, m) {
  m.impl("free_energy_backward", &deem::cuda::free_energy_backward);
  m.impl("free_energy_soft_backward", &deem::cuda::free_energy_soft_backward);
}
