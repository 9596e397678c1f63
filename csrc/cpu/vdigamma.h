// digamma and lgamma of four doubles at once: common/vb_math.h's digamma_lgamma lane by lane (the same
// shift to x >= 10, the same series), with simd.h's vlog for the logs. Inlined into the clones that
// use it, so every clone runs the same operations.
#pragma once
#include "common/vb_math.h"
#include "cpu/simd.h"

namespace deem {
namespace cpu {

// digamma(x); lgamma(x) into *lg when want_lg. Lanes with x <= 0 or NaN give NaN, x = +inf gives +inf
// (both), as the scalar function.
static inline __attribute__((always_inline)) Vec<double>::v vdigamma_lgamma(Vec<double>::v x, bool want_lg,
                                                                            Vec<double>::v* lg) {
  typedef Vec<double>::v v;
  typedef Vec<double>::vi vi;
  const double inf = __builtin_inf(), nan = __builtin_nan("");
  const vi apart = ~(x > 0.0) | (x == inf);  // not a pseudo-count, or the limit
  const v special = vselect(x == inf, v{} + inf, v{} + nan);
  x = vselect(apart, v{} + vb::kShift, x);
  v num = v{}, prod = v{} + 1.0;
  // sum_k 1 / (x + k) as num / prod, four steps at a time while they fit, then one at a time. Any x > 0
  // takes at most two blocks (x + 8 >= kShift - 3) and then three steps, so the loops have fixed counts,
  // each lane masked once it is done: no branch on the lanes' data.
  static_assert(vb::kShift == 10.0, "the fixed step counts below assume the shift to 10");
  for (int it = 0; it < 2; ++it) {
    const vi go = x < vb::kShift - 3.0;
    const v a = x, b = x + 1.0, c = x + 2.0, d = x + 3.0, ab = a * b, cd = c * d, q = ab * cd;
    num = vselect(go, num * q + prod * ((a + b) * cd + (c + d) * ab), num);
    prod = vselect(go, prod * q, prod);
    x = vselect(go, x + 4.0, x);
  }
  for (int it = 0; it < 3; ++it) {
    const vi go = x < vb::kShift;
    num = vselect(go, num * x + prod, num);
    prod = vselect(go, prod * x, prod);
    x = vselect(go, x + 1.0, x);
  }
  const v shift = num / prod;
  const v lx = vlog(x), inv = 1.0 / x, f = inv * inv;
  const v psi =
      lx - 0.5 * inv -
      f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f * (1.0 / 132 - f * (691.0 / 32760 - f / 12))))));
  if (want_lg) {
    const v series =
        inv * (1.0 / 12 - f * (1.0 / 360 - f * (1.0 / 1260 - f * (1.0 / 1680 - f * (1.0 / 1188 - f * (691.0 / 360360))))));
    *lg = vselect(apart, special, (x - 0.5) * lx - x + 0.91893853320467274178 + series - vlog(prod));
  }
  return vselect(apart, special, psi - shift);
}

}  // namespace cpu
}  // namespace deem
