// Arguments of hard_evidence_pass, shared by the CPU and CUDA kernels: the shape and
// dtype checks (one set of messages), and the parameters folded once per call with
// torch ops on the tensors' device (tiny: D*K*K and K values):
//   lp[i, l, m] = logp[l, m, i] - a[i, m],   base[m] = logpi[m] + sum_i a[i, m]
// (a = log_abstain; empty: ignorable, lp = logp transposed, base = logpi), so that a
// row scores base + the sum over its present labels of lp, whatever D is.
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>

#include "common/checks.h"

namespace deem {

struct EvidenceArgs {
  int64_t N, D, K;
  at::Tensor lp;    // (D, K_l, K_m) float64, contiguous
  at::Tensor base;  // (K,) float64, contiguous
};

// The parameters' checks and folding for D voters (any label layout): returns {N = -1, D, K, lp, base}.
inline EvidenceArgs evidence_params(const char* name, int64_t D, const at::Tensor& logp, const at::Tensor& logpi,
                                    const at::Tensor& log_abstain) {
  TORCH_CHECK(logp.dim() == 3 && logp.size(0) == logp.size(1) && logp.size(2) == D && logp.size(0) >= 1, name,
              ": logp must have shape (K, K, D) with D = ", D, ", got ", logp.sizes());
  const int64_t K = logp.size(0);
  TORCH_CHECK(logpi.dim() == 1 && logpi.size(0) == K, name, ": logpi must have shape (", K, "), got ",
              logpi.sizes());
  const bool informative = log_abstain.dim() == 2 && log_abstain.size(0) > 0;
  TORCH_CHECK(log_abstain.dim() == 2 && log_abstain.size(1) == K && (!informative || log_abstain.size(0) == D),
              name, ": log_abstain must have shape (", D, ", ", K, ") or (0, ", K, "), got ", log_abstain.sizes());
  TORCH_CHECK(logp.scalar_type() == at::kDouble && logpi.scalar_type() == at::kDouble &&
                  log_abstain.scalar_type() == at::kDouble,
              name, ": logp, logpi and log_abstain must be float64");
  at::Tensor lp = logp.permute({2, 0, 1});
  at::Tensor base = logpi;
  if (informative) {
    lp = lp - log_abstain.unsqueeze(1);
    base = base + log_abstain.sum(0);
  }
  return {-1, D, K, lp.contiguous(), base.contiguous()};
}

inline EvidenceArgs evidence_args(const char* name, const at::Tensor& labels, const at::Tensor& logp,
                                  const at::Tensor& logpi, const at::Tensor& log_abstain) {
  TORCH_CHECK(labels.dim() == 2 && is_label_dtype(labels.scalar_type()), name,
              ": labels must be a 2-D integer tensor (N, D), got ", labels.sizes(), " ", labels.scalar_type());
  EvidenceArgs ev = evidence_params(name, labels.size(1), logp, logpi, log_abstain);
  ev.N = labels.size(0);
  return ev;
}

}  // namespace deem
