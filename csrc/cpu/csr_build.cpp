// csr_build: (item, voter, label) triples in any order -> the two views of common/csr.h, by
// counting sort in O(labels + items + voters) time (a comparison sort of 50 M triples is the
// slowest step of a fit; this is three linear passes):
//   1. a stable bucket pass by voter, then 2. a stable bucket pass by item over that order: the
//      by-item view, voters ascending within an item (equal pairs keep their input order);
//   3. a stable bucket pass by voter over the by-item view: the by-voter view, items ascending.
// When the items arrive grouped (non-decreasing), steps 1-2 are a stable sort of each item's few
// labels by voter instead: the same order, without two random scatters over every label.
// Duplicate (item, voter) pairs sit next to each other after step 2; the op does not drop or
// merge them, it returns the input position of the first one it meets (the later of the pair;
// -1: none) so that the caller can name it. Data preparation is host work: CPU only.
// Every item, voter and label is bounds-checked before it indexes anything.
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/checks.h"

namespace deem {
namespace cpu {
namespace {

template <typename label_t>
void build(const int64_t* item, const int64_t* voter, const label_t* label, int64_t L, int64_t N, int64_t D,
           int64_t K, int64_t* row_ptr, int64_t* out_voter, label_t* out_label, int64_t* col_ptr,
           int64_t* col_row, label_t* col_label, int64_t* first_duplicate) {
  const char* name = "deem::csr_build";
  std::fill(row_ptr, row_ptr + N + 1, 0);
  std::fill(col_ptr, col_ptr + D + 1, 0);
  for (int64_t j = 0; j < L; ++j) {
    const int64_t n = item[j], i = voter[j], l = static_cast<int64_t>(label[j]);
    TORCH_CHECK(0 <= n && n < N, name, ": item ", n, " at position ", j, " is outside [0, ", N, ")");
    TORCH_CHECK(0 <= i && i < D, name, ": voter ", i, " at position ", j, " is outside [0, ", D, ")");
    TORCH_CHECK(0 <= l && l < K, name, ": label ", l, " at position ", j, " is outside [0, ", K, ")");
    ++row_ptr[n + 1];
    ++col_ptr[i + 1];
  }
  for (int64_t n = 0; n < N; ++n) row_ptr[n + 1] += row_ptr[n];
  for (int64_t i = 0; i < D; ++i) col_ptr[i + 1] += col_ptr[i];
  std::vector<int64_t> by_item(static_cast<size_t>(L));
  std::vector<int64_t> cursor;
  bool grouped = true;  // items already non-decreasing (a long frame grouped by task, the usual case)
  for (int64_t j = 1; j < L && grouped; ++j) grouped = item[j - 1] <= item[j];
  if (grouped) {
    // 1.-2. without the two scatters: each item's labels are already contiguous; sort them by voter in
    // place, stably (insertion sort for the few labels an item has, a merge sort past kShortRow).
    constexpr int64_t kShortRow = 32;
    for (int64_t j = 0; j < L; ++j) by_item[j] = j;
    for (int64_t n = 0; n < N; ++n) {
      int64_t* b = by_item.data() + row_ptr[n];
      const int64_t len = row_ptr[n + 1] - row_ptr[n];
      auto by_voter_then_position = [&](int64_t a, int64_t c) { return voter[a] < voter[c]; };
      if (len > kShortRow) {
        std::stable_sort(b, b + len, by_voter_then_position);
        continue;
      }
      for (int64_t p = 1; p < len; ++p) {
        const int64_t j = b[p];
        int64_t q = p;
        for (; q > 0 && voter[b[q - 1]] > voter[j]; --q) b[q] = b[q - 1];
        b[q] = j;
      }
    }
  } else {
    std::vector<int64_t> by_voter(static_cast<size_t>(L));
    cursor.assign(col_ptr, col_ptr + D);
    for (int64_t j = 0; j < L; ++j) by_voter[cursor[voter[j]]++] = j;  // 1.
    cursor.assign(row_ptr, row_ptr + N);
    for (int64_t p = 0; p < L; ++p) {  // 2.
      const int64_t j = by_voter[p];
      by_item[cursor[item[j]]++] = j;
    }
  }
  *first_duplicate = -1;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t p = row_ptr[n]; p < row_ptr[n + 1]; ++p) {
      const int64_t j = by_item[p];
      out_voter[p] = voter[j];
      out_label[p] = label[j];
      if (p > row_ptr[n] && out_voter[p] == out_voter[p - 1] && *first_duplicate < 0) *first_duplicate = j;
    }
  }
  cursor.assign(col_ptr, col_ptr + D);
  for (int64_t n = 0; n < N; ++n) {  // 3.
    for (int64_t p = row_ptr[n]; p < row_ptr[n + 1]; ++p) {
      const int64_t q = cursor[out_voter[p]]++;
      col_row[q] = n;
      col_label[q] = out_label[p];
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> csr_build(
    const at::Tensor& item_, const at::Tensor& voter_, const at::Tensor& label_, int64_t N, int64_t D,
    int64_t K) {
  const char* name = "deem::csr_build";
  for (const at::Tensor* t : {&item_, &voter_, &label_}) TORCH_CHECK(t->device().is_cpu(), name, ": expected CPU tensors");
  TORCH_CHECK(item_.dim() == 1 && item_.scalar_type() == at::kLong && voter_.dim() == 1 &&
                  voter_.scalar_type() == at::kLong,
              name, ": item and voter must be 1-D int64 tensors");
  TORCH_CHECK(label_.dim() == 1 && is_label_dtype(label_.scalar_type()), name,
              ": label must be a 1-D integer tensor, got ", label_.scalar_type());
  const int64_t L = item_.size(0);
  TORCH_CHECK(voter_.size(0) == L && label_.size(0) == L, name, ": item, voter and label must have the same length");
  TORCH_CHECK(N >= 0 && D >= 0 && K >= 1, name, ": need N >= 0 items, D >= 0 voters and K >= 1 classes");
  const at::Tensor item = item_.contiguous(), voter = voter_.contiguous(), label = label_.contiguous();
  const auto i64 = item.options();
  at::Tensor row_ptr = at::empty({N + 1}, i64), out_voter = at::empty({L}, i64), col_ptr = at::empty({D + 1}, i64);
  at::Tensor col_row = at::empty({L}, i64), out_label = at::empty({L}, label.options());
  at::Tensor col_label = at::empty({L}, label.options());
  at::Tensor duplicate = at::empty({}, i64);
  DEEM_DISPATCH_LABELS(label.scalar_type(), name, [&] {
    build<label_t>(item.data_ptr<int64_t>(), voter.data_ptr<int64_t>(), label.data_ptr<label_t>(), L, N, D, K,
                   row_ptr.data_ptr<int64_t>(), out_voter.data_ptr<int64_t>(), out_label.data_ptr<label_t>(),
                   col_ptr.data_ptr<int64_t>(), col_row.data_ptr<int64_t>(), col_label.data_ptr<label_t>(),
                   duplicate.data_ptr<int64_t>());
  });
  return {row_ptr, out_voter, out_label, col_ptr, col_row, col_label, duplicate};
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) { m.impl("csr_build", &deem::cpu::csr_build); }
