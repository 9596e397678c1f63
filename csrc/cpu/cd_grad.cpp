// cd_grad / cd_grad_soft: d/dtheta [mean F(pos) - mean F(neg)] and that loss in
// one pass over the concatenated rows [pos; neg] (fixed chunks of kChunk rows).
#include "cpu/stats.h"

namespace deem {
namespace cpu {
namespace {

using Result = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Result finish(const std::vector<double>& tot, const Dims& d, const StatLayout& lay, const at::Tensor& W,
              const at::Tensor& b_v, const at::Tensor& b_h) {
  at::Tensor dW = at::empty_like(W), dbv = at::empty_like(b_v), dbh = at::empty_like(b_h);
  at::Tensor loss = at::empty({}, W.options());
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem::cd_grad", [&] {
    store_stats<scalar_t>(tot, d, lay, dW, dbv, dbh);
    *loss.data_ptr<scalar_t>() = static_cast<scalar_t>(tot[lay.loss]);
  });
  return {dW, dbv, dbh, loss};
}

Result cd_grad(const at::Tensor& pos_, const at::Tensor& neg_, const at::Tensor& W_, const at::Tensor& b_v_,
               const at::Tensor& b_h_, bool sample_hidden, int64_t seed, int64_t offset) {
  const char* name = "deem::cd_grad";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_labels(name, "pos", pos_, d);
  check_labels(name, "neg", neg_, d);
  const int64_t Np = pos_.size(0), Nn = neg_.size(0);
  TORCH_CHECK(Np > 0 && Nn > 0, name, ": pos and neg must each have at least one row, got ", Np, " and ", Nn);
  at::Tensor pos = pos_.contiguous(), neg = neg_.contiguous();
  if (pos.scalar_type() != neg.scalar_type()) {
    pos = pos.to(at::kLong);
    neg = neg.to(at::kLong);
  }
  const at::Tensor W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  const StatLayout lay(d);
  std::vector<double> tot;
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    using T = scalar_t;
    DEEM_DISPATCH_LABELS(pos.scalar_type(), name, [&] {
      const std::vector<T> Wt = w_il_jm(W.data_ptr<T>(), d);
      const label_t* xp = pos.data_ptr<label_t>();
      const label_t* xn = neg.data_ptr<label_t>();
      const T *bv = b_v.data_ptr<T>(), *bh = b_h.data_ptr<T>();
      const double ip = 1.0 / static_cast<double>(Np), in = 1.0 / static_cast<double>(Nn);
      tot = chunked_reduce(Np + Nn, lay.size, [&](int64_t r0, int64_t r1, double* buf) {
        RowScratch<T> s(d);
        for (int64_t r = r0; r < r1; ++r) {
          if (r < Np)
            accumulate_hard_row(name, xp + r * d.D, r, d, Wt.data(), bv, bh, -ip, ip, sample_hidden, seed, offset, r,
                                s, lay, buf);
          else
            accumulate_hard_row(name, xn + (r - Np) * d.D, r - Np, d, Wt.data(), bv, bh, in, -in, sample_hidden, seed,
                                offset, r, s, lay, buf);
        }
      });
    });
  });
  return finish(tot, d, lay, W, b_v, b_h);
}

Result cd_grad_soft(const at::Tensor& pos_, const at::Tensor& neg_, const at::Tensor& W_, const at::Tensor& b_v_,
                    const at::Tensor& b_h_, bool sample_hidden, int64_t seed, int64_t offset) {
  const char* name = "deem::cd_grad_soft";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_soft(name, "pos", pos_, W_, d);
  check_labels(name, "neg", neg_, d);
  const int64_t Np = pos_.size(0), Nn = neg_.size(0);
  TORCH_CHECK(Np > 0 && Nn > 0, name, ": pos and neg must each have at least one row, got ", Np, " and ", Nn);
  const at::Tensor pos = pos_.contiguous(), neg = neg_.contiguous();
  const at::Tensor W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  const StatLayout lay(d);
  const int64_t KD = d.K * d.D;
  std::vector<double> tot;
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    using T = scalar_t;
    DEEM_DISPATCH_LABELS(neg.scalar_type(), name, [&] {
      const std::vector<T> Wt = w_il_jm(W.data_ptr<T>(), d);
      const std::vector<T> Ws = w_li_jm(W.data_ptr<T>(), d);
      const T* vp = pos.data_ptr<T>();
      const label_t* xn = neg.data_ptr<label_t>();
      const T *bv = b_v.data_ptr<T>(), *bh = b_h.data_ptr<T>();
      const double ip = 1.0 / static_cast<double>(Np), in = 1.0 / static_cast<double>(Nn);
      tot = chunked_reduce(Np + Nn, lay.size, [&](int64_t r0, int64_t r1, double* buf) {
        RowScratch<T> s(d);
        for (int64_t r = r0; r < r1; ++r) {
          if (r < Np) {
            const double f = accumulate_soft_row(vp + r * KD, d, Ws.data(), bv, bh, -ip, sample_hidden, seed, offset,
                                                 r, s, lay, buf);
            buf[lay.loss] += ip * f;
          } else {
            accumulate_hard_row(name, xn + (r - Np) * d.D, r - Np, d, Wt.data(), bv, bh, in, -in, sample_hidden, seed,
                                offset, r, s, lay, buf);
          }
        }
      });
    });
  });
  return finish(tot, d, lay, W, b_v, b_h);
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) {
  m.impl("cd_grad", &deem::cpu::cd_grad);
  m.impl("cd_grad_soft", &deem::cpu::cd_grad_soft);
}
