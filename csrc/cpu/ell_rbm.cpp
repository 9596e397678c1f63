// ell_hidden_probs, ell_free_energy and ell_cd_grad: hidden_probs, free_energy and cd_grad
// (csrc/cpu/hidden.cpp, energy.cpp, cd_grad.cpp) on padded rows (cpu/ell.h), at the cost of the
// present slots. The arithmetic is the dense kernels' in the same order -- a row's labels are added
// in ascending voter order, the dense rows' order -- so on rows whose voters ascend the results are
// the dense ops' bit for bit (up to the sign of a zero).
//  * ell_cd_grad, determinism: db_h and the loss are summed in cd_grad's fixed chunking of the rows
//    [pos; neg] (chunked_reduce). dW and db_v are summed per voter instead of into per-chunk (D, K, H,
//    K) buffers: a counting sort lists each voter's labels in row order, and one thread adds a voter's
//    labels within chunked_reduce's row groups, then the groups in order -- the additions cd_grad makes
//    for that voter, in its order, without a buffer per group. Memory O(labels * H * K + D * K * H * K).
#include "cpu/ell.h"
#include "cpu/stats.h"

namespace deem {
namespace cpu {
namespace {

// hidden logits of row b into L (H*K), from the present slots (idx, x) of count n.
template <typename T>
inline void ell_logits_row(const int32_t* idx, const int32_t* x, int64_t n, int64_t K, int64_t HK, const T* Wt,
                           const T* bh, T* L) {
  for (int64_t c = 0; c < HK; ++c) L[c] = bh[c];
  for (int64_t p = 0; p < n; ++p) {
    const T* w = Wt + (static_cast<int64_t>(idx[p]) * K + x[p]) * HK;
    for (int64_t c = 0; c < HK; ++c) L[c] += w[c];
  }
}

at::Tensor ell_hidden_probs(const at::Tensor& voter_, const at::Tensor& labels_, const at::Tensor& W_,
                            const at::Tensor& b_h_) {
  const char* name = "deem::ell_hidden_probs";
  const Dims d = check_params(name, W_, nullptr, b_h_);
  check_ell(name, "labels", voter_, labels_);
  const at::Tensor voter = voter_.contiguous(), labels = labels_.contiguous(), W = W_.contiguous(),
                   b_h = b_h_.contiguous();
  const int64_t B = labels.size(0), S = labels.size(1), K = d.K, HK = d.HK();
  at::Tensor out = at::empty({B, d.H, K}, W.options());
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    using T = scalar_t;
    DEEM_DISPATCH_LABELS(labels.scalar_type(), name, [&] {
      const std::vector<T> Wt = w_il_jm(W.data_ptr<T>(), d);
      const int64_t* v = voter.data_ptr<int64_t>();
      const label_t* x = labels.data_ptr<label_t>();
      T* o = out.data_ptr<T>();
      at::parallel_for(0, B, 256, [&](int64_t b0, int64_t b1) {
        std::vector<int32_t> idx(S), xs(S);
        std::vector<T> L(HK);
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t n = read_ell_row(name, v, x, b, S, d.D, K, idx.data(), xs.data());
          ell_logits_row(idx.data(), xs.data(), n, K, HK, Wt.data(), b_h.data_ptr<T>(), L.data());
          softmax_rows(L.data(), o + b * HK, d.H, K);
        }
      });
    });
  });
  return out;
}

at::Tensor ell_free_energy(const at::Tensor& voter_, const at::Tensor& labels_, const at::Tensor& W_,
                           const at::Tensor& b_v_, const at::Tensor& b_h_) {
  const char* name = "deem::ell_free_energy";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_ell(name, "labels", voter_, labels_);
  const at::Tensor voter = voter_.contiguous(), labels = labels_.contiguous(), W = W_.contiguous(),
                   b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  const int64_t B = labels.size(0), S = labels.size(1), K = d.K, HK = d.HK();
  at::Tensor out = at::empty({B}, W.options());
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    using T = scalar_t;
    DEEM_DISPATCH_LABELS(labels.scalar_type(), name, [&] {
      const std::vector<T> Wt = w_il_jm(W.data_ptr<T>(), d);
      const int64_t* v = voter.data_ptr<int64_t>();
      const label_t* x = labels.data_ptr<label_t>();
      const T* bv = b_v.data_ptr<T>();
      T* o = out.data_ptr<T>();
      at::parallel_for(0, B, 64, [&](int64_t b0, int64_t b1) {
        std::vector<int32_t> idx(S), xs(S);
        std::vector<T> L(HK), P(HK);
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t n = read_ell_row(name, v, x, b, S, d.D, K, idx.data(), xs.data());
          ell_logits_row(idx.data(), xs.data(), n, K, HK, Wt.data(), b_h.data_ptr<T>(), L.data());
          double f = softmax_rows(L.data(), P.data(), d.H, K);
          for (int64_t p = 0; p < n; ++p) f += static_cast<double>(bv[static_cast<int64_t>(idx[p]) * K + xs[p]]);
          o[b] = static_cast<T>(-f);
        }
      });
    });
  });
  return out;
}

// One present label of [pos; neg] in a voter's list: its row and label.
struct Entry {
  int64_t row;
  int32_t label;
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ell_cd_grad(
    const at::Tensor& pos_voter_, const at::Tensor& pos_, const at::Tensor& neg_voter_, const at::Tensor& neg_,
    const at::Tensor& W_, const at::Tensor& b_v_, const at::Tensor& b_h_, bool sample_hidden, int64_t seed,
    int64_t offset) {
  const char* name = "deem::ell_cd_grad";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_ell(name, "pos", pos_voter_, pos_);
  check_ell(name, "neg", neg_voter_, neg_);
  const int64_t Np = pos_.size(0), Nn = neg_.size(0), R = Np + Nn, K = d.K, HK = d.HK(), D = d.D;
  TORCH_CHECK(Np > 0 && Nn > 0, name, ": pos and neg must each have at least one row, got ", Np, " and ", Nn);
  const at::Tensor pv = pos_voter_.contiguous(), nv = neg_voter_.contiguous(), W = W_.contiguous(),
                   b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  at::Tensor pos = pos_.contiguous(), neg = neg_.contiguous();
  if (pos.scalar_type() != neg.scalar_type()) {
    pos = pos.to(at::kLong);
    neg = neg.to(at::kLong);
  }
  const int64_t Sp = pos.size(1), Sn = neg.size(1);
  at::Tensor dW = at::empty_like(W), dbv = at::empty_like(b_v), dbh = at::empty_like(b_h);
  at::Tensor loss = at::empty({}, W.options());
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem", [&] {
    using T = scalar_t;
    DEEM_DISPATCH_LABELS(pos.scalar_type(), name, [&] {
      const std::vector<T> Wt = w_il_jm(W.data_ptr<T>(), d);
      const T *bv = b_v.data_ptr<T>(), *bh = b_h.data_ptr<T>();
      const label_t *xp = pos.data_ptr<label_t>(), *xn = neg.data_ptr<label_t>();
      const int64_t *vp = pv.data_ptr<int64_t>(), *vn = nv.data_ptr<int64_t>();
      const double ip = 1.0 / static_cast<double>(Np), in = 1.0 / static_cast<double>(Nn);
      // Pass 1, per row r of [pos; neg]: its weighted hidden statistic wp (H*K), the loss term lw * F,
      // and its present slots (kept for the per-voter lists).
      std::vector<double> wp(static_cast<size_t>(R * HK)), lf(static_cast<size_t>(R));
      std::vector<int64_t> count(static_cast<size_t>(R));
      const int64_t S = std::max(Sp, Sn);
      std::vector<int32_t> idx(static_cast<size_t>(R * S)), lab(static_cast<size_t>(R * S));
      at::parallel_for(0, R, 64, [&](int64_t r0, int64_t r1) {
        RowScratch<T> s(d);
        for (int64_t r = r0; r < r1; ++r) {
          const bool is_pos = r < Np;
          const int64_t b = is_pos ? r : r - Np;
          int32_t *ir = idx.data() + r * S, *xr = lab.data() + r * S;
          const int64_t n = is_pos ? read_ell_row(name, vp, xp, b, Sp, D, K, ir, xr)
                                   : read_ell_row(name, vn, xn, b, Sn, D, K, ir, xr);
          count[r] = n;
          ell_logits_row(ir, xr, n, K, HK, Wt.data(), bh, s.L.data());
          double f = softmax_rows(s.L.data(), s.P.data(), d.H, K);
          hidden_stat(s, d, is_pos ? -ip : in, sample_hidden, seed, offset, r);
          for (int64_t c = 0; c < HK; ++c) wp[r * HK + c] = s.wp[c];
          for (int64_t p = 0; p < n; ++p) f += static_cast<double>(bv[static_cast<int64_t>(ir[p]) * K + xr[p]]);
          lf[r] = (is_pos ? ip : -in) * (-f);
        }
      });
      // db_h and the loss in cd_grad's chunking.
      const std::vector<double> tot = chunked_reduce(R, HK + 1, [&](int64_t r0, int64_t r1, double* buf) {
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t c = 0; c < HK; ++c) buf[c] += wp[r * HK + c];
          buf[HK] += lf[r];
        }
      });
      // Each voter's labels in row order (a stable counting sort).
      std::vector<int64_t> start(static_cast<size_t>(D + 1), 0);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t p = 0; p < count[r]; ++p) ++start[idx[r * S + p] + 1];
      for (int64_t i = 0; i < D; ++i) start[i + 1] += start[i];
      std::vector<Entry> entries(static_cast<size_t>(start[D]));
      {
        std::vector<int64_t> fill(start.begin(), start.end() - 1);
        for (int64_t r = 0; r < R; ++r)
          for (int64_t p = 0; p < count[r]; ++p) entries[fill[idx[r * S + p]]++] = {r, lab[r * S + p]};
      }
      // Per voter: within each row group in row order, then the groups in order (cd_grad's sums).
      const std::vector<int64_t> groups = chunked_group_starts(R);
      std::vector<double> wsum(static_cast<size_t>(D * K * HK), 0.0), vsum(static_cast<size_t>(D * K), 0.0);
      at::parallel_for(0, D, 64, [&](int64_t i0, int64_t i1) {
        std::vector<double> part(K * HK), vpart(K);
        for (int64_t i = i0; i < i1; ++i) {
          double* wt = wsum.data() + i * K * HK;
          double* vt = vsum.data() + i * K;
          int64_t g = 0;
          bool open = false;
          auto flush = [&] {
            for (int64_t k = 0; k < K * HK; ++k) wt[k] += part[k];
            for (int64_t k = 0; k < K; ++k) vt[k] += vpart[k];
            open = false;
          };
          for (int64_t e = start[i]; e < start[i + 1]; ++e) {
            const int64_t r = entries[e].row, l = entries[e].label;
            if (open && r >= groups[g + 1]) flush();
            if (!open) {
              while (r >= groups[g + 1]) ++g;
              std::fill(part.begin(), part.end(), 0.0);
              std::fill(vpart.begin(), vpart.end(), 0.0);
              open = true;
            }
            double* blk = part.data() + l * HK;
            for (int64_t c = 0; c < HK; ++c) blk[c] += wp[r * HK + c];
            vpart[l] += r < Np ? -ip : in;
          }
          if (open) flush();
        }
      });
      store_w_from_il_jm(wsum.data(), dW.data_ptr<T>(), d);
      T* pvv = dbv.data_ptr<T>();
      for (int64_t k = 0; k < D * K; ++k) pvv[k] = static_cast<T>(vsum[k]);
      T* ph = dbh.data_ptr<T>();
      for (int64_t c = 0; c < HK; ++c) ph[c] = static_cast<T>(tot[c]);
      *loss.data_ptr<T>() = static_cast<T>(tot[HK]);
    });
  });
  return {dW, dbv, dbh, loss};
}

}  // namespace
}  // namespace cpu
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CPU, m) {
  m.impl("ell_hidden_probs", &deem::cpu::ell_hidden_probs);
  m.impl("ell_free_energy", &deem::cpu::ell_free_energy);
  m.impl("ell_cd_grad", &deem::cpu::ell_cd_grad);
}
