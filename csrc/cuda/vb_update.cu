// vb_update on CUDA (the step and its outputs: common/vb.h). One thread per confusion column (m, i),
// consecutive threads on consecutive voters, so the (K, K, D) reads and writes coalesce; each column's
// rate logs and KL parts go to a (4, K, D) buffer. The sums over voters are torch reductions on the
// stream (deterministic: no atomics), and the finish -- class weights, the two Newton solves, the KL --
// runs in one thread on the device: no host round trip except the check of the modelled weights.
#include "common/vb.h"
#include "cuda/common.cuh"

namespace deem {
namespace cuda {
namespace {

__global__ void vb_columns_kernel(int64_t D, int64_t K, const double* __restrict__ counts,
                                  const double* __restrict__ log_prior, int n_prior, const double* __restrict__ mass,
                                  const double* __restrict__ modelled, double* __restrict__ elog_p,
                                  double* __restrict__ elog_abstain, double* __restrict__ colstat, bool want_kl,
                                  int* flag) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= D * K) return;
  const int64_t m = t / D, i = t - m * D;
  double x[4] = {0.0, 0.0, 0.0, 0.0};
  for (int p = 0; p < n_prior; ++p) x[p] = exp(log_prior[p]);
  double w = -1.0;
  if (modelled != nullptr) {
    w = modelled[i];
    raise_flag(flag, !(w == 0.0 || w == 1.0));
  }
  double stat[kVbStats] = {0.0, 0.0, 0.0, 0.0};
  auto ignore = [](int64_t, double) {};
  vb_column(counts, elog_p, elog_abstain, D, K, i, m, x, mass[m], w, want_kl, ignore, stat);
  for (int s = 0; s < kVbStats; ++s) colstat[(s * K + m) * D + i] = stat[s];
}

__global__ void vb_finish_kernel(const double* sums, int64_t K, int64_t D, const double* n_keep, const double* mass,
                                 double class_prior, double lo, double hi, bool learn, bool want_kl, bool informative,
                                 const double* log_in, double* log_out, double* elog_pi, double* kl) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  double x[4] = {0.0, 0.0, 0.0, 0.0};
  for (int p = 0; p < (informative ? 4 : 2); ++p) x[p] = exp(log_in[p]);
  vb_finish(sums, K, D, informative ? *n_keep : 0.0, mass, class_prior, lo, hi, learn, want_kl, informative, x,
            log_in, log_out, elog_pi, kl);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> vb_update(
    const at::Tensor& counts_, const at::Tensor& mass_, const at::Tensor& log_prior_, const at::Tensor& modelled_,
    double class_prior, double lo, double hi, bool learn, bool want_kl) {
  const char* name = "deem::vb_update";
  for (const at::Tensor* t : {&counts_, &mass_, &log_prior_, &modelled_})
    TORCH_CHECK(t->is_cuda() && t->device() == counts_.device(), name, ": expected CUDA tensors on one device (",
                counts_.device(), "), got one on ", t->device());
  const c10::cuda::CUDAGuard guard(counts_.device());
  const VbArgs a = vb_args(name, counts_, mass_, log_prior_, modelled_, class_prior, lo, hi);
  const int64_t K = a.K, D = a.D;
  TORCH_CHECK(D * K < (int64_t(1) << 40), name, ": D = ", D, ", K = ", K, " are too large for the CUDA kernel");
  const at::Tensor counts = counts_.contiguous(), mass = mass_.contiguous(), log_prior = log_prior_.contiguous(),
                   modelled = modelled_.contiguous();
  const auto f64 = counts.options();
  at::Tensor elog_p = at::empty({K, K, D}, f64);
  at::Tensor elog_abstain = at::empty({a.informative ? D : 0, K}, f64);
  at::Tensor colstat = at::empty({kVbStats, K, D}, f64);
  at::Tensor flag = new_flag(counts);
  auto stream = at::cuda::getCurrentCUDAStream();
  const int threads = 256;
  if (D > 0) {
    vb_columns_kernel<<<static_cast<unsigned>(ceil_div(D * K, threads)), threads, 0, stream>>>(
        D, K, counts.data_ptr<double>(), log_prior.data_ptr<double>(), static_cast<int>(log_prior.size(0)),
        mass.data_ptr<double>(), a.informative ? modelled.data_ptr<double>() : nullptr, elog_p.data_ptr<double>(),
        a.informative ? elog_abstain.data_ptr<double>() : nullptr, colstat.data_ptr<double>(), want_kl,
        flag.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  raise_if_flagged(flag, name, "modelled weight (0 or 1)");
  // E[l, m] = sum_i elog_p[l, m, i] - sum_i w_i r0[m, i]: the confusion part of the summed expected logs
  const at::Tensor E = elog_p.sum(2) - colstat[kRate0].sum(1).unsqueeze(0);
  const at::Tensor sums = at::cat({E.reshape({K * K}), colstat.sum({1, 2})}).contiguous();
  const at::Tensor n_keep = a.informative ? (modelled > 0).sum().to(at::kDouble) : at::zeros({}, f64);
  at::Tensor elog_pi = at::empty({K}, f64);
  at::Tensor log_out = at::empty_like(log_prior);
  at::Tensor kl = at::empty({}, f64);
  vb_finish_kernel<<<1, 1, 0, stream>>>(sums.data_ptr<double>(), K, D, n_keep.data_ptr<double>(),
                                        mass.data_ptr<double>(), class_prior, lo, hi, learn, want_kl, a.informative,
                                        log_prior.data_ptr<double>(), log_out.data_ptr<double>(),
                                        elog_pi.data_ptr<double>(), kl.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {elog_p, elog_pi, elog_abstain, log_out, kl};
}

}  // namespace
}  // namespace cuda
}  // namespace deem

TORCH_LIBRARY_IMPL(deem, CUDA, m) { m.impl("vb_update", &deem::cuda::vb_update); }
