// hidden_logits / hidden_probs (hard labels, W rows gathered by label, no
// one-hot) and their soft-label versions. Rows are independent: parallel over N.
#include <type_traits>

#include "cpu/common.h"

namespace deem {
namespace cpu {
namespace {

// The predict path with H*K known at compile time: the row's logits live in
// registers and the per-label add unrolls, which matters when H*K is a handful
// of floats (the common case: one hidden unit, K <= 12).
template <typename T, typename label_t, int HK>
void hard_hidden_fixed(const char* name, const label_t* x, int64_t N, const Dims& d, const T* Wt, const T* bh, T* o,
                       bool probs) {
  at::parallel_for(0, N, 256, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      T L[HK];
      for (int c = 0; c < HK; ++c) L[c] = bh[c];
      const label_t* xr = x + n * d.D;
      for (int64_t i = 0; i < d.D; ++i) {
        const int64_t xi = checked_label(name, xr[i], n, i, d.K);
        if (xi < 0) continue;
        const T* w = Wt + (i * d.K + xi) * HK;
        for (int c = 0; c < HK; ++c) L[c] += w[c];
      }
      if (probs) {
        softmax_rows(L, o + n * HK, d.H, d.K);
      } else {
        for (int c = 0; c < HK; ++c) o[n * HK + c] = L[c];
      }
    }
  });
}

template <typename T, typename label_t>
bool hard_hidden_small(const char* name, const label_t* x, int64_t N, const Dims& d, const T* Wt, const T* bh, T* o,
                       bool probs) {
  switch (d.H * d.K) {
#define DEEM_HK_CASE(C) \
  case C:               \
    hard_hidden_fixed<T, label_t, C>(name, x, N, d, Wt, bh, o, probs); \
    return true;
    DEEM_HK_CASE(2) DEEM_HK_CASE(3) DEEM_HK_CASE(4) DEEM_HK_CASE(5) DEEM_HK_CASE(6) DEEM_HK_CASE(8)
    DEEM_HK_CASE(10) DEEM_HK_CASE(12) DEEM_HK_CASE(16)
#undef DEEM_HK_CASE
    default:
      return false;
  }
}

template <typename T, typename label_t>
void hard_hidden(const char* name, const at::Tensor& labels, const at::Tensor& W, const at::Tensor& b_h,
                 const Dims& d, at::Tensor& out, bool probs) {
  const int64_t N = labels.size(0), HK = d.H * d.K;
  const std::vector<T> Wt = w_il_jm(W.data_ptr<T>(), d);
  if (std::is_same<T, float>::value &&
      hard_hidden_small<T, label_t>(name, labels.data_ptr<label_t>(), N, d, Wt.data(), b_h.data_ptr<T>(),
                                    out.data_ptr<T>(), probs))
    return;
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
