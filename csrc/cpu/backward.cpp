// free_energy_backward / free_energy_soft_backward: sum_n grad[n] dF_n/dtheta in
// one pass over the rows (fixed chunking, deterministic for any thread count).
#include "cpu/stats.h"

namespace deem {
namespace cpu {
namespace {

void check_grad(const char* name, const at::Tensor& grad, int64_t N, const at::Tensor& W) {
  TORCH_CHECK(grad.device().is_cpu(), name, ": expected CPU tensors, grad is on ", grad.device());
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
  check_labels(name, "labels", labels_, d);
  check_grad(name, grad_, labels_.size(0), W_);
  const at::Tensor grad = grad_.contiguous(), labels = labels_.contiguous(), W = W_.contiguous(),
                   b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  at::Tensor dW = at::empty_like(W), dbv = at::empty_like(b_v), dbh = at::empty_like(b_h);
  const int64_t N = labels.size(0);
  const StatLayout lay(d);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    using T = scalar_t;
    DEEM_DISPATCH_LABELS(labels.scalar_type(), name, [&] {
      const std::vector<T> Wt = w_il_jm(W.data_ptr<T>(), d);
      const label_t* x = labels.data_ptr<label_t>();
      const T* g = grad.data_ptr<T>();
      const T *bv = b_v.data_ptr<T>(), *bh = b_h.data_ptr<T>();
      const std::vector<double> tot = chunked_reduce(N, lay.size, [&](int64_t r0, int64_t r1, double* buf) {
        RowScratch<T> s(d);
        for (int64_t n = r0; n < r1; ++n)
          accumulate_hard_row(name, x + n * d.D, n, d, Wt.data(), bv, bh, -static_cast<double>(g[n]), 0.0, false, 0, 0,
                              n, s, lay, buf);
      });
      store_stats<T>(tot, d, lay, dW, dbv, dbh);
    });
  });
  return {dW, dbv, dbh};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> free_energy_soft_backward(
    const at::Tensor& grad_, const at::Tensor& v_, const at::Tensor& W_, const at::Tensor& b_v_,
    const at::Tensor& b_h_) {
  const char* name = "deem::free_energy_soft_backward";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_soft(name, "v", v_, W_, d);
  check_grad(name, grad_, v_.size(0), W_);
  const at::Tensor grad = grad_.contiguous(), v = v_.contiguous(), W = W_.contiguous(), b_v = b_v_.contiguous(),
                   b_h = b_h_.contiguous();
  at::Tensor dv = at::empty_like(v), dW = at::empty_like(W), dbv = at::empty_like(b_v), dbh = at::empty_like(b_h);
  const int64_t N = v.size(0), KD = d.K * d.D;
  const StatLayout lay(d);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    using T = scalar_t;
    const std::vector<T> Ws = w_li_jm(W.data_ptr<T>(), d);
    const T* vp = v.data_ptr<T>();
    const T* g = grad.data_ptr<T>();
    const T *bv = b_v.data_ptr<T>(), *bh = b_h.data_ptr<T>();
    T* dvp = dv.data_ptr<T>();
    const std::vector<double> tot = chunked_reduce(N, lay.size, [&](int64_t r0, int64_t r1, double* buf) {
      RowScratch<T> s(d);
      for (int64_t n = r0; n < r1; ++n) {
        const double gn = static_cast<double>(g[n]);
        accumulate_soft_row(vp + n * KD, d, Ws.data(), bv, bh, -gn, false, 0, 0, n, s, lay, buf, dvp + n * KD, gn);
      }
    });
    store_stats<T>(tot, d, lay, dW, dbv, dbh);
  });
  return {dv, dW, dbv, dbh};
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) {
  m.impl("free_energy_backward", &deem::cpu::free_energy_backward);
  m.impl("free_energy_soft_backward", &deem::cpu::free_energy_soft_backward);
}
