// Padded rows ("ELL") on CUDA: B rows of labels stored sparse, row b's present labels in its S
// slots -- voter (B, S) int64, labels (B, S) integer, label -1 = an empty slot whose voter is not
// read (schemas: csrc/ops.cpp). What ell_rbm.cu and ell_chains.cu share: the argument checks and
// the bounds-checked read of one slot, plus the bad-entry report of the ops that sync.
#pragma once
#include "cuda/common.cuh"

namespace deem {
namespace cuda {

// voter (B, S) int64 and labels (B, S) integer on W's CUDA device; small enough for the kernels'
// 32-bit row (Philox) and (slot, class) index arithmetic.
inline void check_ell(const char* name, const char* what, const at::Tensor& voter, const at::Tensor& labels,
                      const at::Tensor& W, const Dims& d) {
  TORCH_CHECK(voter.is_cuda() && labels.is_cuda(), name, ": expected CUDA tensors, ", what, "_voter is on ",
              voter.device(), " and ", what, " on ", labels.device());
  TORCH_CHECK(voter.device() == W.device() && labels.device() == W.device(), name, ": ", what, "_voter is on ",
              voter.device(), " and ", what, " on ", labels.device(), " but W is on ", W.device());
  TORCH_CHECK(voter.dim() == 2 && voter.scalar_type() == at::kLong, name, ": ", what,
              "_voter must be a 2-D int64 tensor, got ", voter.sizes(), " ", voter.scalar_type());
  TORCH_CHECK(labels.dim() == 2 && is_label_dtype(labels.scalar_type()), name, ": ", what,
              " must be a 2-D int8, int16, int32 or int64 tensor, got ", labels.sizes(), " ", labels.scalar_type());
  TORCH_CHECK(voter.sizes() == labels.sizes(), name, ": ", what, "_voter and ", what,
              " must have the same shape, got ", voter.sizes(), " and ", labels.sizes());
  TORCH_CHECK(labels.size(0) < (int64_t(1) << 32), name, ": ", what, " has too many rows for the CUDA kernels");
  TORCH_CHECK(labels.size(1) * std::max<int64_t>(d.K, 1) < (int64_t(1) << 30), name, ": ", what, " has too many slots (",
              labels.size(1), ") per row for the CUDA kernels");
}

// Slot k of a padded row: returns its label in [0, K) and sets v to its voter in [0, D) when the slot
// is present and both are in range; -1 for an empty slot, and -1 with `bad` set for a label outside
// [-1, K) or a present slot whose voter is outside [0, D) (never used as an index). The voter is
// read only for a present label.
template <typename label_t>
__device__ __forceinline__ int ell_slot(const int64_t* __restrict__ voter, const label_t* __restrict__ labels,
                                        int64_t k, int K, int D, int& v, bool& bad) {
  const int l = checked_label(labels[k], K, bad);
  if (l < 0) return -1;
  const int64_t i = voter[k];
  if (i < 0 || i >= D) {
    bad = true;
    return -1;
  }
  v = static_cast<int>(i);
  return l;
}

// The report of a raised flag (one small .item(), a sync).
inline void raise_if_ell_flagged(const at::Tensor& flag, const char* name) {
  const int bad = flag.item<int>();
  TORCH_CHECK(bad == 0, name,
              ": a label or voter is out of range; expected labels -1 (empty slot) or in [0, K), and the voter "
              "of every present slot in [0, D)");
}

}  // namespace cuda
}  // namespace deem
