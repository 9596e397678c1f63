// log_partition: exact log Z, summing over the K^H (<= 2^20) hidden
// configurations with the visible units summed out analytically.
//
// Why this shape: the configurations are independent, so one thread per
// configuration h computes s(h) = sum_j b_h[j, h_j] + sum_i logsumexp_l(b_v[i, l]
// + sum_j W[l, h_j, i, j]) in double (same order of additions as the CPU
// kernel) into a buffer, with the transposed W (D, K_v, H, K_h) in shared memory
// when it fits; the final log-sum-exp over at most 2^20 doubles is one torch
// reduction. Not on any hot path.
#include "cuda/common.cuh"

namespace deem {
namespace cuda {
namespace {

constexpr int kMaxDigits = 20;  // K >= 2 and K^H <= 2^20  =>  H <= 20

template <typename scalar_t>
__global__ void __launch_bounds__(256)
    config_score_kernel(int64_t C, int D, int K, int H, const scalar_t* __restrict__ Wt_g, long long wt_off,
                        const scalar_t* __restrict__ bv, const scalar_t* __restrict__ bh, double* __restrict__ out) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int HK = H * K;
  const scalar_t* Wt = stage(Wt_g, int64_t(D) * K * HK, wt_off, smem);
  __syncthreads();
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    // Digits of c in base K (unit j = digit j); K == 1 means every h_j = 0 (any H).
    int h[kMaxDigits];
    int64_t rem = c;
    double s = 0.0;
    for (int j = 0; j < H; ++j) {
      const int hj = K == 1 ? 0 : static_cast<int>(rem % K);
      if (K > 1) {
        rem /= K;
        h[j] = hj;
      }
      s += static_cast<double>(bh[j * K + hj]);
    }
    for (int i = 0; i < D; ++i) {
      double mx = -INFINITY;
      for (int l = 0; l < K; ++l) {
        const scalar_t* w = Wt + (int64_t(i) * K + l) * HK;
        double t = static_cast<double>(bv[i * K + l]);
        for (int j = 0; j < H; ++j) t += static_cast<double>(w[j * K + (K == 1 ? 0 : h[j])]);
        mx = fmax(mx, t);
      }
      double e = 0.0;
      for (int l = 0; l < K; ++l) {
        const scalar_t* w = Wt + (int64_t(i) * K + l) * HK;
        double t = static_cast<double>(bv[i * K + l]);
        for (int j = 0; j < H; ++j) t += static_cast<double>(w[j * K + (K == 1 ? 0 : h[j])]);
        e += exp(t - mx);
      }
      s += mx + log(e);
    }
    out[c] = s;
  }
}

at::Tensor log_partition(const at::Tensor& W_, const at::Tensor& b_v_, const at::Tensor& b_h_) {
  const char* name = "deem::log_partition";
  const Dims d = check_params(name, W_, &b_v_, b_h_);
  const int64_t K = d.K, D = d.D, H = d.H;
  int64_t C = 1;
  for (int64_t j = 0; j < H; ++j) {
    C *= K;
    TORCH_CHECK(C <= (int64_t(1) << 20), name, ": K^H = ", K, "^", H,
                " hidden configurations exceeds the limit of 2^20 for exact enumeration");
  }
  const c10::cuda::CUDAGuard guard(W_.device());
  const at::Tensor W = W_.contiguous(), b_v = b_v_.contiguous(), b_h = b_h_.contiguous();
  at::Tensor vals = at::empty({C}, W.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    const at::Tensor Wt = w_il_jm(W);
    SmemPlan plan(max_smem_optin());
    const long long wt_off = plan.add_optional(size_t(Wt.numel()) * sizeof(scalar_t));
    const size_t smem = plan.used;
    auto kernel = config_score_kernel<scalar_t>;
    set_smem(kernel, smem);
    const int threads = 256;
    const int64_t grid = std::min<int64_t>(ceil_div(C, threads), int64_t(blocks_per_sm(kernel, threads, smem)) * num_sms());
    kernel<<<static_cast<unsigned>(grid), threads, smem, at::cuda::getCurrentCUDAStream()>>>(
        C, static_cast<int>(D), static_cast<int>(K), static_cast<int>(H), Wt.data_ptr<scalar_t>(), wt_off,
        b_v.data_ptr<scalar_t>(), b_h.data_ptr<scalar_t>(), vals.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return at::logsumexp(vals, {0}).to(W.scalar_type());
}

}  // namespace
}  // namespace cuda
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CUDA, m) { m.impl("log_partition", &deem::cuda::log_partition); }
