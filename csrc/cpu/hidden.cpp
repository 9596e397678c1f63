// hidden_logits / hidden_probs (hard labels, W rows gathered by label, no
// one-hot) and their soft-label versions. Rows are independent: parallel over N.
#include "cpu/common.h"

namespace deem {
namespace cpu {
namespace {

template <typename T, typename label_t>
void hard_hidden(const char* name, const at::Tensor& labels, const at::Tensor& W, const at::Tensor& b_h,
                 const Dims& d, at::Tensor& out, bool probs) {
  const int64_t N = labels.size(0), HK = d.H * d.K;
  const std::vector<T> Wt = w_il_jm(W.data_ptr<T>(), d);
  const label_t* x = labels.data_ptr<label_t>();
  const T* bh = b_h.data_ptr<T>();
  T* o = out.data_ptr<T>();
  at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
    std::vector<T> L(HK);
    for (int64_t n = n0; n < n1; ++n) {
      if (probs) {
        hard_logits_row(name, x + n * d.D, n, d, Wt.data(), bh, L.data());
        softmax_rows(L.data(), o + n * HK, d.H, d.K);
      } else {
        hard_logits_row(name, x + n * d.D, n, d, Wt.data(), bh, o + n * HK);
      }
    }
  });
}

at::Tensor hidden_impl(const char* name, const at::Tensor& labels_, const at::Tensor& W_, const at::Tensor& b_h_,
                       bool probs) {
  const Dims d = check_params(name, W_, nullptr, b_h_);
  check_labels(name, "labels", labels_, d);
  const at::Tensor labels = labels_.contiguous(), W = W_.contiguous(), b_h = b_h_.contiguous();
  at::Tensor out = at::empty({labels.size(0), d.H, d.K}, W.options());
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    DEEM_DISPATCH_LABELS(labels.scalar_type(), name,
                         [&] { hard_hidden<scalar_t, label_t>(name, labels, W, b_h, d, out, probs); });
  });
  return out;
}

at::Tensor soft_hidden_impl(const char* name, const at::Tensor& v_, const at::Tensor& W_, const at::Tensor& b_h_,
                            bool probs) {
  const Dims d = check_params(name, W_, nullptr, b_h_);
  check_soft(name, "v", v_, W_, d);
  const at::Tensor v = v_.contiguous(), W = W_.contiguous(), b_h = b_h_.contiguous();
  const int64_t N = v.size(0), HK = d.H * d.K, KD = d.K * d.D;
  at::Tensor out = at::empty({N, d.H, d.K}, W.options());
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    using T = scalar_t;
    const std::vector<T> Ws = w_li_jm(W.data_ptr<T>(), d);
    const T* vp = v.data_ptr<T>();
    const T* bh = b_h.data_ptr<T>();
    T* o = out.data_ptr<T>();
    at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
      std::vector<T> L(HK);
      for (int64_t n = n0; n < n1; ++n) {
        if (probs) {
          soft_logits_row(vp + n * KD, d, Ws.data(), bh, L.data());
          softmax_rows(L.data(), o + n * HK, d.H, d.K);
        } else {
          soft_logits_row(vp + n * KD, d, Ws.data(), bh, o + n * HK);
        }
      }
    });
  });
  return out;
}

at::Tensor hidden_logits(const at::Tensor& labels, const at::Tensor& W, const at::Tensor& b_h) {
  return hidden_impl("deem::hidden_logits", labels, W, b_h, false);
}
at::Tensor hidden_probs(const at::Tensor& labels, const at::Tensor& W, const at::Tensor& b_h) {
  return hidden_impl("deem::hidden_probs", labels, W, b_h, true);
}
at::Tensor hidden_logits_soft(const at::Tensor& v, const at::Tensor& W, const at::Tensor& b_h) {
  return soft_hidden_impl("deem::hidden_logits_soft", v, W, b_h, false);
}
at::Tensor hidden_probs_soft(const at::Tensor& v, const at::Tensor& W, const at::Tensor& b_h) {
  return soft_hidden_impl("deem::hidden_probs_soft", v, W, b_h, true);
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) {
  m.impl("hidden_logits", &deem::cpu::hidden_logits);
  m.impl("hidden_probs", &deem::cpu::hidden_probs);
  m.impl("hidden_logits_soft", &deem::cpu::hidden_logits_soft);
  m.impl("hidden_probs_soft", &deem::cpu::hidden_probs_soft);
}
