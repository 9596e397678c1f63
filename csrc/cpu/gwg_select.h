// The proposal draw of the GWG kernels (gwg.cpp over all voters, ell_gwg.cpp over a row's present
// slots): the spec's inverse CDF in (coordinate, class) order, through each coordinate's row sum first.
#pragma once
#include <cstdint>

namespace deem {
namespace cpu {

// The first coordinate i < n whose running sum of s passes thr, then the first class l whose running
// sum of weight(i, l) (double) does; rounding fallbacks: coordinate `last` when no row passes, the last
// eligible class of the row (K - 1, or K - 2 when x(i) == K - 1) when no class does.
template <typename Weight, typename Label>
inline void gwg_select(double thr, const double* s, int64_t n, int64_t K, int64_t last, const Weight& weight,
                       const Label& x, int64_t& i, int64_t& l) {
  double run = 0.0;
  i = -1;
  l = -1;
  for (int64_t k = 0; k < n; ++k) {
    const double nxt = run + s[k];
    if (thr < nxt) {
      i = k;
      break;
    }
    run = nxt;
  }
  if (i >= 0) {
    for (int64_t k = 0; k < K; ++k) {
      run += static_cast<double>(weight(i, k));
      if (thr < run) {
        l = k;
        break;
      }
    }
  } else {
    i = last;
  }
  if (l < 0) l = (x(i) == K - 1) ? K - 2 : K - 1;
}

}  // namespace cpu
}  // namespace deem
