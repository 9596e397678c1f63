// energy, free_energy (hard labels) and free_energy_soft: one value per row.
//
// Why this shape: energy is a pure gather (D*H W entries per row, chosen by
// both the visible and the hidden state), so one thread per row reading the
// transposed W (D, K_v, H, K_h) through L1 is enough -- W is tiny and stays
// cached; the row's labels are read by the thread itself (consecutive rows are
// consecutive D-element runs, so a warp touches a few contiguous lines).
// The free energies need the full H*K hidden logits of a row before the
// log-sum-exp, so they use the row-tile kernel of tile.cuh (coalesced tile
// loads, one thread per (row, hidden element) for the gather-sum, one thread
// per row for the sum of log-sum-exps). Accumulation is in double, in the same
// order as the CPU kernels.
#include "cuda/tile.cuh"

namespace deem {
namespace cuda {
namespace {

template <typename scalar_t, typename label_t>
__global__ void __launch_bounds__(256)
    energy_kernel(int64_t N, int D, int K, int H, const label_t* __restrict__ labels,
                  const int64_t* __restrict__ hidden, const scalar_t* __restrict__ Wt, const scalar_t* __restrict__ bv,
                  const scalar_t* __restrict__ bh, scalar_t* __restrict__ out, int* __restrict__ flag) {
  bool bad = false;
  const int HK = H * K;
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    const int64_t* h = hidden + n * H;
    const label_t* x = labels + n * D;
    double e = 0.0;
    for (int j = 0; j < H; ++j) {
      const int64_t hj = h[j];
      if (hj < 0 || hj >= K) {
        bad = true;
        continue;
      }
      e -= static_cast<double>(bh[j * K + hj]);
    }
    for (int i = 0; i < D; ++i) {
      const int xi = checked_label(x[i], K, bad);
      if (xi < 0) continue;
      e -= static_cast<double>(bv[i * K + xi]);
      const scalar_t* w = Wt + (int64_t(i) * K + xi) * HK;
      for (int j = 0; j < H; ++j) {
        const int64_t hj = h[j];
        if (hj >= 0 && hj < K) e -= static_cast<double>(w[j * K + hj]);
      }
    }
    out[n] = static_cast<scalar_t>(e);
  }
  raise_flag(flag, bad);
}

at::Tensor energy(const at::Tensor& labels_, const at::Tensor& hidden_, const at::Tensor& W_, const at::Tensor& b_v_,
                  const at::Tensor& b_h_) {
  const char* name = "deem::energy";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_labels(name, "labels", labels_, W_, d);
  check_cuda(name, "hidden", hidden_, W_);
  TORCH_CHECK(hidden_.dim() == 2 && hidden_.size(0) == labels_.size(0) && hidden_.size(1) == d.H, name,
              ": hidden must have shape (N, H) = (", labels_.size(0), ", ", d.H, "), got ", hidden_.sizes());
  TORCH_CHECK(is_label_dtype(hidden_.scalar_type()), name, ": hidden must be an integer tensor (int64), got ",
              hidden_.scalar_type());
  const c10::cuda::CUDAGuard guard(W_.device());
  const at::Tensor labels = labels_.contiguous(), hidden = hidden_.to(at::kLong).contiguous(), W = W_.contiguous(),
                   b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  const int64_t N = labels.size(0);
  at::Tensor out = at::empty({N}, W.options());
  if (N == 0) return out;
  at::Tensor flag = new_flag(W);
  const at::Tensor Wt = w_il_jm(W);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    DEEM_DISPATCH_LABELS(labels.scalar_type(), name, [&] {
      const int threads = 256;
      const int64_t grid = std::min<int64_t>(ceil_div(N, threads), int64_t(num_sms()) * 8);
      energy_kernel<scalar_t, label_t><<<static_cast<unsigned>(grid), threads, 0, at::cuda::getCurrentCUDAStream()>>>(
          N, static_cast<int>(d.D), static_cast<int>(d.K), static_cast<int>(d.H), labels.data_ptr<label_t>(),
          hidden.data_ptr<int64_t>(), Wt.data_ptr<scalar_t>(), b_v.data_ptr<scalar_t>(), b_h.data_ptr<scalar_t>(),
          out.data_ptr<scalar_t>(), flag.data_ptr<int>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  raise_if_flagged(flag, name, "label or hidden state");
  return out;
}

at::Tensor free_energy(const at::Tensor& labels_, const at::Tensor& W_, const at::Tensor& b_v_, const at::Tensor& b_h_) {
  const char* name = "deem::free_energy";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_labels(name, "labels", labels_, W_, d);
  const c10::cuda::CUDAGuard guard(W_.device());
  const at::Tensor labels = labels_.contiguous(), W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  const int64_t N = labels.size(0);
  at::Tensor out = at::empty({N}, W.options());
  if (N == 0) return out;
  at::Tensor flag = new_flag(W);
  const at::Tensor Wt = w_il_jm(W);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    DEEM_DISPATCH_LABELS(labels.scalar_type(), name, [&] {
      launch_tile_forward<scalar_t, label_t, false, kFreeEnergy>(
          name, d, N, Wt, b_v.data_ptr<scalar_t>(), b_h.data_ptr<scalar_t>(), labels.data_ptr<label_t>(), nullptr,
          out.data_ptr<scalar_t>(), flag.data_ptr<int>());
    });
  });
  raise_if_flagged(flag, name);
  return out;
}

at::Tensor free_energy_soft(const at::Tensor& v_, const at::Tensor& W_, const at::Tensor& b_v_,
                            const at::Tensor& b_h_) {
  const char* name = "deem::free_energy_soft";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  check_soft(name, "v", v_, W_, d);
  const c10::cuda::CUDAGuard guard(W_.device());
  const at::Tensor v = v_.contiguous(), W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  const int64_t N = v.size(0);
  at::Tensor out = at::empty({N}, W.options());
  if (N == 0) return out;
  at::Tensor flag = new_flag(W);  // unused by soft rows, kept valid
  const at::Tensor Ws = w_li_jm(W);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    launch_tile_forward<scalar_t, int8_t, true, kFreeEnergy>(name, d, N, Ws, b_v.data_ptr<scalar_t>(),
                                                             b_h.data_ptr<scalar_t>(), nullptr, v.data_ptr<scalar_t>(),
                                                             out.data_ptr<scalar_t>(), flag.data_ptr<int>());
  });
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CUDA, m) {
  m.impl("energy", &deem::cuda::energy);
  m.impl("free_energy", &deem::cuda::free_energy);
  m.impl("free_energy_soft", &deem::cuda::free_energy_soft);
}
