// log_partition: exact log Z by summing over the K^H hidden configurations, the
// visible units summed out analytically.
#include "cpu/common.h"

namespace deem {
namespace cpu {
namespace {

at::Tensor log_partition(const at::Tensor& W_, const at::Tensor& b_v_, const at::Tensor& b_h_) {
  const char* name = "deem::log_partition";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  const int64_t K = d.K, D = d.D, H = d.H, HK = H * K;
  int64_t C = 1;
  for (int64_t j = 0; j < H; ++j) {
    C *= K;
    TORCH_CHECK(C <= (int64_t(1) << 20), name, ": K^H = ", K, "^", H,
                " hidden configurations exceeds the limit of 2^20 for exact enumeration");
  }
  const at::Tensor W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  at::Tensor out = at::empty({}, W.options());
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    using T = scalar_t;
    const std::vector<T> Wt = w_il_jm(W.data_ptr<T>(), d);
    const T *bv = b_v.data_ptr<T>(), *bh = b_h.data_ptr<T>();
    std::vector<double> val(C);
    at::parallel_for(0, C, 256, [&](int64_t c0, int64_t c1) {
      std::vector<int64_t> h(H);
      std::vector<double> a(K);
      for (int64_t c = c0; c < c1; ++c) {
        int64_t rem = c;
        double s = 0.0;
        for (int64_t j = 0; j < H; ++j) {
          h[j] = rem % K;
          rem /= K;
          s += static_cast<double>(bh[j * K + h[j]]);
        }
        for (int64_t i = 0; i < D; ++i) {
          double mx = -std::numeric_limits<double>::infinity();
          for (int64_t l = 0; l < K; ++l) {
            const T* w = Wt.data() + (i * K + l) * HK;
            double t = static_cast<double>(bv[i * K + l]);
            for (int64_t j = 0; j < H; ++j) t += static_cast<double>(w[j * K + h[j]]);
            a[l] = t;
            mx = std::max(mx, t);
          }
          double e = 0.0;
          for (int64_t l = 0; l < K; ++l) e += std::exp(a[l] - mx);
          s += mx + std::log(e);
        }
        val[c] = s;
      }
    });
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < C; ++c) mx = std::max(mx, val[c]);
    double e = 0.0;
    for (int64_t c = 0; c < C; ++c) e += std::exp(val[c] - mx);
    *out.data_ptr<T>() = static_cast<T>(mx + std::log(e));
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) { m.impl("log_partition", &deem::cpu::log_partition); }
