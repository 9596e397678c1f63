// hidden_logits / hidden_probs (hard labels) and their soft twins.
//
// Why this shape: predict() calls hidden_probs on millions of rows with a small
// model (H*K of a few tens), so the op is a stream -- read D labels per row
// (int8 is common), write H*K probabilities -- and has to run near memory
// bandwidth. The fast kernel gives one thread per row and keeps that row's H*K
// logits in registers (padded to MAXP = 8/16/32, 16-byte packs), so each
// present label costs ceil(H*K/4) 16-byte loads of a transposed W row
// Wt[i, x_i, :] and no one-hot is ever formed. Around that:
//  * the block's 128 rows of labels are one contiguous byte range: it is copied
//    to shared memory with aligned 16-byte loads (scalar head/tail), so the
//    global read is fully coalesced whatever the label width;
//  * results go to a shared output tile which the block writes back with
//    coalesced 16-byte stores (a thread-per-row store pattern would scatter);
//  * the padded Wt (+ b_h as its last row) is staged in shared memory when it is
//    small (<= 32 KB), else it is read from global through L1 (it is tiny next
//    to the stream and stays cached), keeping occupancy high;
//  * grid = resident blocks, grid-stride over 128-row tiles, so W is staged
//    once per block.
// Larger H*K, and the soft versions (dense K*D inputs, compute-bound), use the
// generic row-tile kernel in tile.cuh.
#include "cuda/tile.cuh"

namespace deem {
namespace cuda {
namespace {

constexpr int kFastRows = 256;

// PW consecutive values moved by one shared-memory load (PW * sizeof <= 16 bytes).
template <typename scalar_t, int PW>
struct alignas(sizeof(scalar_t) * PW) Pack {
  scalar_t v[PW];
};

// Copies bytes src[0, n) into shared memory at base + (src % 16), so that the
// aligned middle of the range moves with 16-byte loads/stores. Returns the
// shared-memory address of src[0]. base must be 16-aligned with n + 16 bytes.
__device__ __forceinline__ const unsigned char* copy_bytes_to_smem(const unsigned char* __restrict__ src, size_t n,
                                                                   unsigned char* base) {
  const size_t mis = reinterpret_cast<uintptr_t>(src) & 15;
  unsigned char* dst = base + mis;
  const size_t head = min(n, (16 - mis) & 15);
  const size_t nvec = (n - head) / 16;
  for (size_t k = threadIdx.x; k < head; k += blockDim.x) dst[k] = src[k];
  const uint4* s4 = reinterpret_cast<const uint4*>(src + head);
  uint4* d4 = reinterpret_cast<uint4*>(dst + head);
  for (size_t k = threadIdx.x; k < nvec; k += blockDim.x) d4[k] = __ldcs(s4 + k);  // streamed once
  for (size_t k = head + nvec * 16 + threadIdx.x; k < n; k += blockDim.x) dst[k] = src[k];
  return dst;
}

template <typename scalar_t>
struct FastArgs {
  int64_t N;
  int D, K, H;
  const scalar_t* Wp;  // ((D*K + 1), H*K): Wt rows, then b_h
  long long w_off;     // -1: read Wp from global (through L1)
  long long lab_off;   // -1: read the labels straight from global
  long long out_off;
  bool probs;
};

// Adds the W row of label l to the register accumulator (PW-wide loads).
template <typename scalar_t, int MAXP, int PW>
__device__ __forceinline__ void add_row(scalar_t (&acc)[MAXP], const Pack<scalar_t, PW>* wr, int npk) {
#pragma unroll
  for (int p = 0; p < MAXP / PW; ++p) {
    if (p < npk) {
      const Pack<scalar_t, PW> w = wr[p];
#pragma unroll
      for (int q = 0; q < PW; ++q) acc[p * PW + q] += w.v[q];
    }
  }
}

template <typename scalar_t, typename label_t, int MAXP, int PW>
__global__ void __launch_bounds__(kFastRows)
    hidden_fast_kernel(FastArgs<scalar_t> a, const label_t* __restrict__ labels, scalar_t* __restrict__ out,
                       int* __restrict__ flag) {
  using P = Pack<scalar_t, PW>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int D = a.D, K = a.K, HK = a.H * a.K;
  const int npk = HK / PW;  // PW divides H*K: no padding, fewest shared-memory words per label
  const int nrows_w = D * K + 1;
  const P* W;
  if (a.w_off >= 0) {
    P* s = reinterpret_cast<P*>(smem + a.w_off);
    const P* g = reinterpret_cast<const P*>(a.Wp);
    for (int k = threadIdx.x; k < nrows_w * npk; k += blockDim.x) s[k] = g[k];
    W = s;
  } else {
    W = reinterpret_cast<const P*>(a.Wp);
  }
  scalar_t* sOut = reinterpret_cast<scalar_t*>(smem + a.out_off);
  // Labels narrower than 4 bytes are read 4 bytes at a time when rows allow it.
  constexpr int LPW = sizeof(label_t) < 4 ? 4 / sizeof(label_t) : 1;
  bool bad = false;
  const int64_t ntiles = ceil_div(a.N, kFastRows);
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    const int64_t row0 = t * kFastRows;
    const int rows = static_cast<int>(min(static_cast<int64_t>(kFastRows), a.N - row0));
    __syncthreads();  // W staged / previous tile written out
    const label_t* tl = labels + row0 * D;
    if (a.lab_off >= 0) {
      tl = reinterpret_cast<const label_t*>(copy_bytes_to_smem(reinterpret_cast<const unsigned char*>(tl),
                                                               size_t(rows) * D * sizeof(label_t), smem + a.lab_off));
      __syncthreads();
    }
    if (threadIdx.x < rows) {
      const label_t* xr = tl + threadIdx.x * D;
      scalar_t acc[MAXP];
#pragma unroll
      for (int q = 0; q < MAXP; ++q) acc[q] = scalar_t(0);
      {  // acc = b_h (the last row), then += Wt[i, x_i, :] for present i, i ascending (CPU order)
        const P* bp = W + (nrows_w - 1) * npk;
#pragma unroll
        for (int p = 0; p < MAXP / PW; ++p) {
          if (p < npk) {
            const P w = bp[p];
#pragma unroll
            for (int q = 0; q < PW; ++q) acc[p * PW + q] = w.v[q];
          }
        }
      }
      const bool vec = LPW > 1 && (D % LPW) == 0 && (reinterpret_cast<uintptr_t>(xr) & 3) == 0;
      if (vec) {
        const uint32_t* xw = reinterpret_cast<const uint32_t*>(xr);
        for (int k = 0; k < D / LPW; ++k) {
          const uint32_t word = xw[k];
#pragma unroll
          for (int q = 0; q < LPW; ++q) {
            const label_t x = static_cast<label_t>(word >> (q * 8 * sizeof(label_t)));
            const int l = checked_label(x, K, bad);
            if (l >= 0) add_row<scalar_t, MAXP, PW>(acc, W + ((k * LPW + q) * K + l) * npk, npk);
          }
        }
      } else {
        for (int i = 0; i < D; ++i) {
          const int l = checked_label(xr[i], K, bad);
          if (l >= 0) add_row<scalar_t, MAXP, PW>(acc, W + (i * K + l) * npk, npk);
        }
      }
      scalar_t* o = sOut + threadIdx.x * HK;
#pragma unroll
      for (int q = 0; q < MAXP; ++q)
        if (q < HK) o[q] = acc[q];
      if (a.probs)
        for (int j = 0; j < a.H; ++j) softmax_unit(o + j * K, K);
    }
    __syncthreads();
    // Coalesced write-back of the contiguous output tile with 16-byte stores; its
    // start (row0 * HK * sizeof, row0 a multiple of 256) is 16-byte aligned.
    constexpr int VN = 16 / sizeof(scalar_t);
    using V = Pack<scalar_t, VN>;
    const int n = rows * HK;
    const int nv = n / VN;
    V* dst = reinterpret_cast<V*>(out + row0 * HK);
    const V* srcv = reinterpret_cast<const V*>(sOut);
    for (int k = threadIdx.x; k < nv; k += blockDim.x) dst[k] = srcv[k];
    for (int k = nv * VN + threadIdx.x; k < n; k += blockDim.x) out[row0 * HK + k] = sOut[k];
  }
  raise_flag(flag, bad);
}

template <typename scalar_t, typename label_t, int MAXP, int PW>
void launch_fast(const Dims& d, int64_t N, const at::Tensor& Wp, const label_t* labels, scalar_t* out, bool probs,
                 int* flag) {
  const int64_t HK = d.HK();
  FastArgs<scalar_t> a;
  a.N = N;
  a.D = static_cast<int>(d.D);
  a.K = static_cast<int>(d.K);
  a.H = static_cast<int>(d.H);
  a.Wp = Wp.data_ptr<scalar_t>();
  a.probs = probs;
  SmemPlan plan(max_smem_optin());
  a.out_off = plan.add(size_t(kFastRows) * HK * sizeof(scalar_t));
  const size_t lab_bytes = size_t(kFastRows) * d.D * sizeof(label_t);
  a.lab_off = lab_bytes <= 32 * 1024 ? plan.add(lab_bytes + 16) : -1;
  const size_t w_bytes = size_t(Wp.numel()) * sizeof(scalar_t);
  a.w_off = w_bytes <= 64 * 1024 ? plan.add(w_bytes) : -1;
  const size_t smem = plan.used;
  auto kernel = hidden_fast_kernel<scalar_t, label_t, MAXP, PW>;
  set_smem(kernel, smem);
  const int64_t ntiles = ceil_div(N, kFastRows);
  const int64_t grid = std::min<int64_t>(ntiles, int64_t(blocks_per_sm(kernel, kFastRows, smem)) * num_sms());
  kernel<<<static_cast<unsigned>(grid), kFastRows, smem, at::cuda::getCurrentCUDAStream()>>>(a, labels, out, flag);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// PW = the widest pack (<= 16 bytes) dividing H*K; MAXP = register accumulator size.
template <typename scalar_t, typename label_t, int MAXP>
void launch_fast_pw(const Dims& d, int64_t N, const at::Tensor& Wp, const label_t* labels, scalar_t* out, bool probs,
                    int* flag) {
  const int64_t HK = d.HK();
  if (sizeof(scalar_t) == 4 && HK % 4 == 0)
    launch_fast<scalar_t, label_t, MAXP, 16 / sizeof(scalar_t)>(d, N, Wp, labels, out, probs, flag);
  else if (HK % 2 == 0)
    launch_fast<scalar_t, label_t, MAXP, 2>(d, N, Wp, labels, out, probs, flag);
  else
    launch_fast<scalar_t, label_t, MAXP, 1>(d, N, Wp, labels, out, probs, flag);
}

at::Tensor hidden_impl(const char* name, const at::Tensor& labels_, const at::Tensor& W_, const at::Tensor& b_h_,
                       bool probs) {
  const Dims d = check_params(name, W_, nullptr, b_h_);
  check_labels(name, "labels", labels_, W_, d);
  const c10::cuda::CUDAGuard guard(W_.device());
  const at::Tensor labels = labels_.contiguous(), W = W_.contiguous(), b_h = b_h_.contiguous();
  const int64_t N = labels.size(0), HK = d.HK();
  at::Tensor out = at::empty({N, d.H, d.K}, W.options());
  if (N == 0 || HK == 0) return out;
  at::Tensor flag = new_flag(W);
  const at::Tensor Wt = w_il_jm(W);  // (D, K, H, K)
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    DEEM_DISPATCH_LABELS(labels.scalar_type(), name, [&] {
      const label_t* lp = labels.data_ptr<label_t>();
      scalar_t* op = out.data_ptr<scalar_t>();
      int* fp = flag.data_ptr<int>();
      if (HK <= 32) {
        // Wt rows then b_h: ((D*K + 1), H*K), unpadded.
        const at::Tensor Wp = at::cat({Wt.view({d.D * d.K, HK}), b_h.view({1, HK})}, 0);
        if (HK <= 8)
          launch_fast_pw<scalar_t, label_t, 8>(d, N, Wp, lp, op, probs, fp);
        else if (HK <= 16)
          launch_fast_pw<scalar_t, label_t, 16>(d, N, Wp, lp, op, probs, fp);
        else
          launch_fast_pw<scalar_t, label_t, 32>(d, N, Wp, lp, op, probs, fp);
      } else if (probs) {
        launch_tile_forward<scalar_t, label_t, false, kProbs>(name, d, N, Wt, nullptr, b_h.data_ptr<scalar_t>(), lp,
                                                              nullptr, op, flag.data_ptr<int>());
      } else {
        launch_tile_forward<scalar_t, label_t, false, kLogits>(name, d, N, Wt, nullptr, b_h.data_ptr<scalar_t>(), lp,
                                                               nullptr, op, flag.data_ptr<int>());
      }
    });
  });
  // Off the training hot path (prediction / analysis): one small sync to report bad labels.
  raise_if_flagged(flag, name);
  return out;
}

at::Tensor hidden_soft_impl(const char* name, const at::Tensor& v_, const at::Tensor& W_, const at::Tensor& b_h_,
                            bool probs) {
  const Dims d = check_params(name, W_, nullptr, b_h_);
  check_soft(name, "v", v_, W_, d);
  const c10::cuda::CUDAGuard guard(W_.device());
  const at::Tensor v = v_.contiguous(), W = W_.contiguous(), b_h = b_h_.contiguous();
  const int64_t N = v.size(0);
  at::Tensor out = at::empty({N, d.H, d.K}, W.options());
  if (N == 0 || d.HK() == 0) return out;
  const at::Tensor Ws = w_li_jm(W);  // (K, D, H, K)
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "deem_cuda", [&] {
    const scalar_t* bh = b_h.data_ptr<scalar_t>();
    // Soft rows carry no labels to check: flag pointer unused but valid.
    at::Tensor flag = new_flag(W);
    if (probs)
      launch_tile_forward<scalar_t, int8_t, true, kProbs>(name, d, N, Ws, nullptr, bh, nullptr,
                                                          v.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                                          flag.data_ptr<int>());
    else
      launch_tile_forward<scalar_t, int8_t, true, kLogits>(name, d, N, Ws, nullptr, bh, nullptr,
                                                           v.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                                           flag.data_ptr<int>());
  });
  return out;
}

at::Tensor hidden_logits(const at::Tensor& labels, const at::Tensor& W, const at::Tensor& b_h) {
  return hidden_impl("deem::hidden_logits", labels, W, b_h, false);
}
at::Tensor hidden_probs(const at::Tensor& labels, const at::Tensor& W, const at::Tensor& b_h) {
  return hidden_impl("deem::hidden_probs", labels, W, b_h, true);
}
at::Tensor hidden_logits_soft(const at::Tensor& v, const at::Tensor& W, const at::Tensor& b_h) {
  return hidden_soft_impl("deem::hidden_logits_soft", v, W, b_h, false);
}
at::Tensor hidden_probs_soft(const at::Tensor& v, const at::Tensor& W, const at::Tensor& b_h) {
  return hidden_soft_impl("deem::hidden_probs_soft", v, W, b_h, true);
}

}  // namespace
}  // namespace cuda
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CUDA, m) {
  m.impl("hidden_logits", &deem::cuda::hidden_logits);
  m.impl("hidden_probs", &deem::cuda::hidden_probs);
  m.impl("hidden_logits_soft", &deem::cuda::hidden_logits_soft);
  m.impl("hidden_probs_soft", &deem::cuda::hidden_probs_soft);
}
