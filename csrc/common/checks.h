// Argument checks and label dispatch shared by the CPU and CUDA kernels: shapes,
// dtypes and the label-dtype switch. Each device's common header adds its own
// device checks (CPU tensors / same CUDA device) and size limits around these.
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>

namespace deem {

// Dispatch over the label dtypes; defines label_t inside the lambda (scalar_t of
// an enclosing AT_DISPATCH_FLOATING_TYPES stays visible).
#define DEEM_DISPATCH_LABELS(TYPE, NAME, ...)                                               \
  [&] {                                                                                     \
    switch (TYPE) {                                                                         \
      case at::kChar: { using label_t = int8_t; return __VA_ARGS__(); }                     \
      case at::kShort: { using label_t = int16_t; return __VA_ARGS__(); }                   \
      case at::kInt: { using label_t = int32_t; return __VA_ARGS__(); }                     \
      case at::kLong: { using label_t = int64_t; return __VA_ARGS__(); }                    \
      default:                                                                              \
        TORCH_CHECK(false, NAME, ": labels must be int8, int16, int32 or int64, got ", TYPE); \
    }                                                                                       \
  }()

struct Dims {
  int64_t K, D, H;
  int64_t HK() const { return H * K; }
};

inline bool is_label_dtype(at::ScalarType t) {
  return t == at::kChar || t == at::kShort || t == at::kInt || t == at::kLong;
}

// W (K, K, D, H); b_v (D, K) when given; b_h (H, K); one floating dtype. Devices unchecked.
inline Dims check_param_shapes(const char* name, const at::Tensor& W, const at::Tensor* b_v, const at::Tensor& b_h) {
  TORCH_CHECK(W.dim() == 4, name, ": W must have shape (K, K, D, H), got ", W.sizes());
  TORCH_CHECK(W.size(0) == W.size(1), name, ": W must have shape (K, K, D, H), got ", W.sizes());
  TORCH_CHECK(W.scalar_type() == at::kFloat || W.scalar_type() == at::kDouble, name,
              ": parameters must be float32 or float64, got ", W.scalar_type());
  Dims d{W.size(0), W.size(2), W.size(3)};
  TORCH_CHECK(d.K >= 1, name, ": K must be >= 1");
  TORCH_CHECK(b_h.dim() == 2 && b_h.size(0) == d.H && b_h.size(1) == d.K, name, ": b_h must have shape (H, K) = (",
              d.H, ", ", d.K, "), got ", b_h.sizes());
  TORCH_CHECK(b_h.scalar_type() == W.scalar_type(), name, ": b_h dtype ", b_h.scalar_type(), " differs from W dtype ",
              W.scalar_type());
  if (b_v) {
    TORCH_CHECK(b_v->dim() == 2 && b_v->size(0) == d.D && b_v->size(1) == d.K, name,
                ": b_v must have shape (D, K) = (", d.D, ", ", d.K, "), got ", b_v->sizes());
    TORCH_CHECK(b_v->scalar_type() == W.scalar_type(), name, ": b_v dtype ", b_v->scalar_type(),
                " differs from W dtype ", W.scalar_type());
  }
  return d;
}

// Hard labels (N, D) of an integer dtype. Device unchecked.
inline void check_label_shape(const char* name, const char* what, const at::Tensor& labels, const Dims& d) {
  TORCH_CHECK(labels.dim() == 2 && labels.size(1) == d.D, name, ": ", what, " must have shape (N, D) with D = ", d.D,
              ", got ", labels.sizes());
  TORCH_CHECK(is_label_dtype(labels.scalar_type()), name, ": ", what,
              " must be int8, int16, int32 or int64, got ", labels.scalar_type());
}

// Soft labels (N, K, D) in W's dtype. Device unchecked.
inline void check_soft_shape(const char* name, const char* what, const at::Tensor& v, const at::Tensor& W,
                             const Dims& d) {
  TORCH_CHECK(v.dim() == 3 && v.size(1) == d.K && v.size(2) == d.D, name, ": ", what,
              " must have shape (N, K, D) = (N, ", d.K, ", ", d.D, "), got ", v.sizes());
  TORCH_CHECK(v.scalar_type() == W.scalar_type(), name, ": ", what, " dtype ", v.scalar_type(),
              " differs from W dtype ", W.scalar_type());
}

}  // namespace deem
