// Padded rows ("ELL") on the CPU: B rows of labels stored sparse, row b's present labels in its S
// slots -- voter (B, S) int64, labels (B, S) integer, label -1 = an empty slot whose voter is not
// read. The ell_* ops are their dense namesakes on the densified rows; this header holds their
// argument checks and the read of one row's present slots, every index bounds-checked.
#pragma once
#include "cpu/common.h"

namespace deem {
namespace cpu {

inline void check_ell(const char* name, const char* what, const at::Tensor& voter, const at::Tensor& labels) {
  TORCH_CHECK(voter.device().is_cpu() && labels.device().is_cpu(), name, ": expected CPU tensors, ", what,
              " is on ", labels.device());
  TORCH_CHECK(voter.dim() == 2 && voter.scalar_type() == at::kLong, name, ": ", what,
              "_voter must be a 2-D int64 tensor, got ", voter.sizes(), " ", voter.scalar_type());
  TORCH_CHECK(labels.dim() == 2 && is_label_dtype(labels.scalar_type()), name, ": ", what,
              " must be a 2-D int8, int16, int32 or int64 tensor, got ", labels.sizes(), " ", labels.scalar_type());
  TORCH_CHECK(voter.sizes() == labels.sizes(), name, ": ", what, "_voter and ", what,
              " must have the same shape, got ", voter.sizes(), " and ", labels.sizes());
}

// Row b's present slots into idx (voters) and x (labels), in slot order; returns their count.
// Throws on a label outside [-1, K) or a present voter outside [0, D).
template <typename label_t>
inline int64_t read_ell_row(const char* name, const int64_t* voter, const label_t* labels, int64_t b, int64_t S,
                            int64_t D, int64_t K, int32_t* idx, int32_t* x) {
  int64_t n = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t l = static_cast<int64_t>(labels[b * S + s]);
    if (l == -1) continue;
    TORCH_CHECK(l >= 0 && l < K, name, ": label ", l, " at (row ", b, ", slot ", s,
                ") is out of range; expected -1 (empty slot) or a value in [0, ", K, ")");
    const int64_t i = voter[b * S + s];
    TORCH_CHECK(i >= 0 && i < D, name, ": voter ", i, " at (row ", b, ", slot ", s, ") is outside [0, ", D, ")");
    idx[n] = static_cast<int32_t>(i);
    x[n++] = static_cast<int32_t>(l);
  }
  return n;
}

// Every row's slots checked (read_ell_row), in parallel: what the chain ops do before any chain moves.
template <typename label_t>
inline void check_ell_rows(const char* name, const int64_t* voter, const label_t* labels, int64_t B, int64_t S,
                           int64_t D, int64_t K) {
  at::parallel_for(0, B, 256, [&](int64_t b0, int64_t b1) {
    std::vector<int32_t> idx(S), x(S);
    for (int64_t b = b0; b < b1; ++b) read_ell_row(name, voter, labels, b, S, D, K, idx.data(), x.data());
  });
}

// Row b's present slots of checked rows (check_ell_rows): voters idx, labels x and slot numbers slot, in
// slot order; returns their count. A chain op moves x and writes it back through slot.
template <typename label_t>
inline int64_t compact_ell_row(const int64_t* voter, const label_t* labels, int64_t b, int64_t S, int32_t* idx,
                               int32_t* x, int32_t* slot) {
  int64_t n = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t l = static_cast<int64_t>(labels[b * S + s]);
    if (l < 0) continue;
    idx[n] = static_cast<int32_t>(voter[b * S + s]);
    x[n] = static_cast<int32_t>(l);
    slot[n++] = static_cast<int32_t>(s);
  }
  return n;
}

// The shell of the padded-row sampler ops (ell_gwg_steps, ell_dlp_steps), as chain_op.h is the dense
// ones': argument checks, the (B,) accepted counts, a contiguous working copy of the chains written back
// after, every chain's slots checked before any chain moves, W in the (D, K, H, K) layout, and the float /
// label-dtype dispatch around the sampler:
//   run.template operator()<T, label_t>(d, Wt, b_v, b_h, voter, chains, B, S, accepted)
template <typename Run>
at::Tensor run_ell_chain_op(const char* name, const at::Tensor& voter_, at::Tensor& chains, const at::Tensor& W_,
                            const at::Tensor& b_v_, const at::Tensor& b_h_, int64_t n_steps, const Run& run) {
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_ell(name, "chains", voter_, chains);
  TORCH_CHECK(n_steps >= 0, name, ": n_steps must be >= 0, got ", n_steps);
  TORCH_CHECK(d.D < (int64_t(1) << 30) && d.K < (int64_t(1) << 30), name, ": D or K too large");
  const int64_t B = chains.size(0), S = chains.size(1);
  at::Tensor accepted = at::zeros({B}, chains.options().dtype(at::kInt));
  if (B == 0) return accepted;
  at::Tensor work = chains.is_contiguous() ? chains : chains.contiguous();
  const at::Tensor voter = voter_.contiguous(), W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    DEEM_DISPATCH_LABELS(work.scalar_type(), name, [&] {
      label_t* x = work.data_ptr<label_t>();
      const int64_t* v = voter.data_ptr<int64_t>();
      check_ell_rows(name, v, x, B, S, d.D, d.K);
      const std::vector<scalar_t> Wt = w_il_jm(W.data_ptr<scalar_t>(), d);
      run.template operator()<scalar_t, label_t>(d, Wt.data(), b_v.data_ptr<scalar_t>(), b_h.data_ptr<scalar_t>(), v,
                                                 x, B, S, accepted.data_ptr<int32_t>());
    });
  });
  if (!work.is_same(chains)) chains.copy_(work);
  return accepted;
}

}  // namespace cpu
}  // namespace deem
