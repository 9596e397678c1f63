// The shell of the CPU sampler ops (gwg_steps, dlp_steps): argument checks, the
// (B,) accepted counts, a contiguous working copy of the chains written back when
// the input was not contiguous, every label validated before any chain moves,
// and the float / label-dtype dispatch around the sampler itself:
//   run.template operator()<T, label_t>(d, W, b_v, b_h, chains, B, accepted)
// with contiguous W, b_v, b_h.
#pragma once
#include "cpu/common.h"

namespace deem {
namespace cpu {

template <typename Run>
at::Tensor run_chain_op(const char* name, at::Tensor& chains, const at::Tensor& W_, const at::Tensor& b_v_,
                        const at::Tensor& b_h_, int64_t n_steps, const Run& run) {
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_labels(name, "chains", chains, d);
  TORCH_CHECK(n_steps >= 0, name, ": n_steps must be >= 0, got ", n_steps);
  TORCH_CHECK(d.D < (int64_t(1) << 30) && d.K < (int64_t(1) << 30), name, ": D or K too large");
  const int64_t B = chains.size(0);
  at::Tensor accepted = at::zeros({B}, chains.options().dtype(at::kInt));
  if (B == 0) return accepted;
  at::Tensor work = chains.is_contiguous() ? chains : chains.contiguous();
  const at::Tensor W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    DEEM_DISPATCH_LABELS(work.scalar_type(), name, [&] {
      label_t* x = work.data_ptr<label_t>();
      at::parallel_for(0, B, 256, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b)
          for (int64_t i = 0; i < d.D; ++i) checked_label(name, x[b * d.D + i], b, i, d.K);
      });
      run.template operator()<scalar_t, label_t>(d, W, b_v, b_h, x, B, accepted.data_ptr<int32_t>());
    });
  });
  if (!work.is_same(chains)) chains.copy_(work);
  return accepted;
}

}  // namespace cpu
}  // namespace deem
