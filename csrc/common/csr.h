// Arguments of csr_evidence_pass, shared by the CPU and CUDA kernels: hard labels stored
// sparse, two views of the same (item, voter, label) triples --
//   by item  (CSR): row_ptr (N + 1) int64, voter (L) int64, label (L) integer;
//   by voter (CSC): col_ptr (D + 1) int64, col_row (L) int64, col_label (L) integer
// (the CSC view is read only for the expected counts, by the CUDA kernels; (0)-shaped when want_counts
// is false).
// The shape and dtype checks live here (one set of messages); the parameters are checked and
// folded as for the dense pass (common/evidence.h). Index *values* are bounds-checked by the
// kernels as they read them.
#pragma once
#include "common/evidence.h"

namespace deem {

struct CsrArgs {
  int64_t N, D, K, L;
  at::Tensor lp, base;  // as EvidenceArgs
};

inline void check_index_vector(const char* name, const char* what, const at::Tensor& t) {
  TORCH_CHECK(t.dim() == 1 && t.scalar_type() == at::kLong, name, ": ", what,
              " must be a 1-D int64 tensor, got ", t.sizes(), " ", t.scalar_type());
}

inline CsrArgs csr_args(const char* name, const at::Tensor& row_ptr, const at::Tensor& voter,
                        const at::Tensor& label, const at::Tensor& col_ptr, const at::Tensor& col_row,
                        const at::Tensor& col_label, const at::Tensor& logp, const at::Tensor& logpi,
                        const at::Tensor& log_abstain, bool want_counts) {
  check_index_vector(name, "row_ptr", row_ptr);
  check_index_vector(name, "voter", voter);
  TORCH_CHECK(row_ptr.size(0) >= 1, name, ": row_ptr must hold N + 1 >= 1 offsets");
  TORCH_CHECK(label.dim() == 1 && is_label_dtype(label.scalar_type()), name,
              ": label must be a 1-D integer tensor, got ", label.sizes(), " ", label.scalar_type());
  const int64_t L = voter.size(0);
  TORCH_CHECK(label.size(0) == L, name, ": voter and label must have the same length, got ", L, " and ",
              label.size(0));
  const int64_t D = logp.dim() == 3 ? logp.size(2) : -1;
  EvidenceArgs ev = evidence_params(name, D, logp, logpi, log_abstain);
  if (want_counts) {
    check_index_vector(name, "col_ptr", col_ptr);
    check_index_vector(name, "col_row", col_row);
    TORCH_CHECK(col_ptr.size(0) == D + 1, name, ": col_ptr must hold D + 1 = ", D + 1, " offsets, got ",
                col_ptr.size(0));
    TORCH_CHECK(col_label.dim() == 1 && col_label.scalar_type() == label.scalar_type(), name,
                ": col_label must be a 1-D tensor of label's dtype ", label.scalar_type(), ", got ",
                col_label.sizes(), " ", col_label.scalar_type());
    TORCH_CHECK(col_row.size(0) == L && col_label.size(0) == L, name,
                ": the by-voter view must hold the same ", L, " labels, got ", col_row.size(0), " and ",
                col_label.size(0));
  }
  return {row_ptr.size(0) - 1, D, ev.K, L, ev.lp, ev.base};
}

}  // namespace deem
