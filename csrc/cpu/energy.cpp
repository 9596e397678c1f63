// energy(v, h), free_energy (hard labels) and free_energy_soft. One value per row.
#include "cpu/common.h"

namespace deem {
namespace cpu {
namespace {

template <typename T, typename label_t, typename hid_t>
void energy_kernel(const char* name, const at::Tensor& labels, const at::Tensor& hidden, const at::Tensor& W,
                   const at::Tensor& b_v, const at::Tensor& b_h, const Dims& d, at::Tensor& out) {
  const int64_t N = labels.size(0), K = d.K, D = d.D, H = d.H;
  const std::vector<T> Wt = w_il_jm(W.data_ptr<T>(), d);  // (D, K, H, K)
  const label_t* x = labels.data_ptr<label_t>();
  const hid_t* hp = hidden.data_ptr<hid_t>();
  const T* bv = b_v.data_ptr<T>();
  const T* bh = b_h.data_ptr<T>();
  T* o = out.data_ptr<T>();
  at::parallel_for(0, N, 256, [&](int64_t n0, int64_t n1) {
    std::vector<int64_t> h(H);
    for (int64_t n = n0; n < n1; ++n) {
      double e = 0.0;
      for (int64_t j = 0; j < H; ++j) {
        const int64_t hj = static_cast<int64_t>(hp[n * H + j]);
        TORCH_CHECK(hj >= 0 && hj < K, name, ": hidden state ", hj, " at (row ", n, ", unit ", j,
                    ") is out of range [0, ", K, ")");
        h[j] = hj;
        e -= static_cast<double>(bh[j * K + hj]);
      }
      for (int64_t i = 0; i < D; ++i) {
        const int64_t xi = checked_label(name, x[n * D + i], n, i, K);
        if (xi < 0) continue;
        e -= static_cast<double>(bv[i * K + xi]);
        const T* w = Wt.data() + (i * K + xi) * H * K;
        for (int64_t j = 0; j < H; ++j) e -= static_cast<double>(w[j * K + h[j]]);
      }
      o[n] = static_cast<T>(e);
    }
  });
}

at::Tensor energy(const at::Tensor& labels_, const at::Tensor& hidden_, const at::Tensor& W_, const at::Tensor& b_v_,
                  const at::Tensor& b_h_) {
  const char* name = "deem::energy";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_labels(name, "labels", labels_, d);
  TORCH_CHECK(hidden_.device().is_cpu(), name, ": expected CPU tensors, hidden is on ", hidden_.device());
  TORCH_CHECK(hidden_.dim() == 2 && hidden_.size(0) == labels_.size(0) && hidden_.size(1) == d.H, name,
              ": hidden must have shape (N, H) = (", labels_.size(0), ", ", d.H, "), got ", hidden_.sizes());
  TORCH_CHECK(is_label_dtype(hidden_.scalar_type()), name, ": hidden must be an integer tensor (int64), got ",
              hidden_.scalar_type());
  const at::Tensor labels = labels_.contiguous(), hidden = hidden_.contiguous(), W = W_.contiguous(),
                   b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  at::Tensor out = at::empty({labels.size(0)}, W.options());
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    DEEM_DISPATCH_LABELS(labels.scalar_type(), name, [&] {
      if (hidden.scalar_type() == at::kLong) {
        energy_kernel<scalar_t, label_t, int64_t>(name, labels, hidden, W, b_v, b_h, d, out);
      } else {
        at::Tensor h64 = hidden.to(at::kLong);
        energy_kernel<scalar_t, label_t, int64_t>(name, labels, h64, W, b_v, b_h, d, out);
      }
    });
  });
  return out;
}

template <typename T, typename label_t>
void free_energy_kernel(const char* name, const at::Tensor& labels, const at::Tensor& W, const at::Tensor& b_v,
                        const at::Tensor& b_h, const Dims& d, at::Tensor& out) {
  const int64_t N = labels.size(0), K = d.K, D = d.D, HK = d.H * d.K;
  const std::vector<T> Wt = w_il_jm(W.data_ptr<T>(), d);
  const label_t* x = labels.data_ptr<label_t>();
  const T* bv = b_v.data_ptr<T>();
  const T* bh = b_h.data_ptr<T>();
  T* o = out.data_ptr<T>();
  at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
    std::vector<T> L(HK), P(HK);
    for (int64_t n = n0; n < n1; ++n) {
      const label_t* xr = x + n * D;
      hard_logits_row(name, xr, n, d, Wt.data(), bh, L.data());
      double f = softmax_rows(L.data(), P.data(), d.H, K);
      for (int64_t i = 0; i < D; ++i) {
        const int64_t xi = static_cast<int64_t>(xr[i]);
        if (xi >= 0) f += static_cast<double>(bv[i * K + xi]);
      }
      o[n] = static_cast<T>(-f);
    }
  });
}

at::Tensor free_energy(const at::Tensor& labels_, const at::Tensor& W_, const at::Tensor& b_v_, const at::Tensor& b_h_) {
  const char* name = "deem::free_energy";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_labels(name, "labels", labels_, d);
  const at::Tensor labels = labels_.contiguous(), W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  at::Tensor out = at::empty({labels.size(0)}, W.options());
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    DEEM_DISPATCH_LABELS(labels.scalar_type(), name,
                         [&] { free_energy_kernel<scalar_t, label_t>(name, labels, W, b_v, b_h, d, out); });
  });
  return out;
}

at::Tensor free_energy_soft(const at::Tensor& v_, const at::Tensor& W_, const at::Tensor& b_v_, const at::Tensor& b_h_) {
  const char* name = "deem::free_energy_soft";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_soft(name, "v", v_, W_, d);
  const at::Tensor v = v_.contiguous(), W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  const int64_t N = v.size(0), K = d.K, D = d.D, HK = d.H * d.K, KD = K * D;
  at::Tensor out = at::empty({N}, W.options());
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    using T = scalar_t;
    const std::vector<T> Ws = w_li_jm(W.data_ptr<T>(), d);
    const T* vp = v.data_ptr<T>();
    const T* bv = b_v.data_ptr<T>();
    const T* bh = b_h.data_ptr<T>();
    T* o = out.data_ptr<T>();
    at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
      std::vector<T> L(HK), P(HK);
      for (int64_t n = n0; n < n1; ++n) {
        const T* vr = vp + n * KD;
        soft_logits_row(vr, d, Ws.data(), bh, L.data());
        double f = softmax_rows(L.data(), P.data(), d.H, K);
        for (int64_t l = 0; l < K; ++l)
          for (int64_t i = 0; i < D; ++i) f += static_cast<double>(vr[l * D + i]) * static_cast<double>(bv[i * K + l]);
        o[n] = static_cast<T>(-f);
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) {
  m.impl("energy", &deem::cpu::energy);
  m.impl("free_energy", &deem::cpu::free_energy);
  m.impl("free_energy_soft", &deem::cpu::free_energy_soft);
}
