// softmax_block (softmax_block.h): AVX2 and baseline clones of the same vector operations.
#include "cpu/softmax_block.h"

#include "cpu/simd.h"

namespace deem {
namespace cpu {

static_assert(kSoftmaxRows == Vec<double>::N, "one vector of doubles per class");

DEEM_CLONES void softmax_block(double* s, int64_t K, double* lse) {
  typedef Vec<double>::v v;
  typedef Vec<double>::vi vi;
  v mx = vload<v>(s);
  vi bad = mx != mx;
  for (int64_t m = 1; m < K; ++m) {
    const v x = vload<v>(s + m * kSoftmaxRows);
    bad |= x != x;
    mx = vselect(x > mx, x, mx);
  }
  bad |= (mx == -__builtin_inf()) | (mx == __builtin_inf());  // all at -inf, or one at +inf: 0 / 0
  v z = v{};
  for (int64_t m = 0; m < K; ++m) {
    const v e = vexp(vload<v>(s + m * kSoftmaxRows) - mx);
    vstore(s + m * kSoftmaxRows, e);
    z += e;
  }
  const v inv = 1.0 / z, nan = v{} + __builtin_nan("");
  for (int64_t m = 0; m < K; ++m) vstore(s + m * kSoftmaxRows, vselect(bad, nan, vload<v>(s + m * kSoftmaxRows) * inv));
  vstore(lse, vselect(bad, nan, mx + vlog(z)));
}

}  // namespace cpu
}  // namespace deem
