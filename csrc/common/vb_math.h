// The scalar mathematics of vb_update, usable from host and device code:
//  * digamma, lgamma and trigamma of x > 0 (recurrence up to x >= 10, then the asymptotic series;
//    about 1e-15 relative, what the float64 expected logs need; anything else gives NaN);
//  * the empirical-Bayes objective of each learned prior, with its gradient and Hessian;
//  * a projected Newton ascent for a concave function of two numbers in a box.
// The objectives are strictly concave (log-likelihoods of a Dirichlet in its parameters, through
// an injective linear map), so Newton from the last iteration's optimum lands in a few steps, to
// rounding: two processes holding the same statistics up to their summation order agree on the
// prior to about 1e-15, which a tolerance-stopped quasi-Newton solve does not promise.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/philox.h"  // DEEM_HD

namespace deem {
namespace vb {

constexpr double kShift = 10.0;  // the series are used from here on

// digamma(x) and, when lg is not null, lgamma(x), sharing the shift and the log.
DEEM_HD double digamma_lgamma(double x, double* lg) {
  if (!(x > 0.0) || x == INFINITY) {  // negative, zero, NaN: not a pseudo-count; +inf: the limit
    if (lg != nullptr) *lg = x == INFINITY ? INFINITY : NAN;
    return x == INFINITY ? INFINITY : NAN;
  }
  // sum_k 1 / (x + k) as num / prod, prod = x (x + 1) ... : one division instead of one per step;
  // four steps at a time while they fit (independent products: a short dependency chain)
  double num = 0.0, prod = 1.0;
  while (x < kShift - 3.0) {
    const double a = x, b = x + 1.0, c = x + 2.0, d = x + 3.0, ab = a * b, cd = c * d, q = ab * cd;
    num = num * q + prod * ((a + b) * cd + (c + d) * ab);
    prod *= q;
    x += 4.0;
  }
  while (x < kShift) {
    num = num * x + prod;
    prod *= x;
    x += 1.0;
  }
  const double shift = num / prod;
  const double lx = log(x), inv = 1.0 / x, f = inv * inv;
  const double psi =
      lx - 0.5 * inv -
      f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f * (1.0 / 132 - f * (691.0 / 32760 - f / 12))))));
  if (lg != nullptr) {
    const double series =
        inv * (1.0 / 12 - f * (1.0 / 360 - f * (1.0 / 1260 - f * (1.0 / 1680 - f * (1.0 / 1188 - f * (691.0 / 360360))))));
    *lg = (x - 0.5) * lx - x + 0.91893853320467274178 + series - log(prod);
  }
  return psi - shift;
}

DEEM_HD double digamma(double x) { return digamma_lgamma(x, nullptr); }

DEEM_HD double lgamma_pos(double x) {
  double lg;
  digamma_lgamma(x, &lg);
  return lg;
}

DEEM_HD double trigamma(double x) {
  if (!(x > 0.0)) return NAN;
  double shift = 0.0;
  while (x < kShift) {
    shift += 1.0 / (x * x);
    x += 1.0;
  }
  const double inv = 1.0 / x, f = inv * inv;
  return shift + inv + 0.5 * f +
         inv * f * (1.0 / 6 - f * (1.0 / 30 - f * (1.0 / 42 - f * (1.0 / 30 - f * (5.0 / 66 - f * (691.0 / 2730 - f * 7.0 / 6))))));
}

// Value, gradient and Hessian (h[0] = d2/dx0^2, h[1] = d2/dx0dx1, h[2] = d2/dx1^2) at x.
struct Eval {
  double v, g[2], h[3];
};

// The confusion prior: every column of every voter's confusion is Dir(off + diag * e_m). Its part of the
// evidence lower bound, summed over the n_voters * K columns, with x = (diag, off):
//   n K [lgamma(K off + diag) - lgamma(off + diag) - (K - 1) lgamma(off)] + diag T + (off - 1) U,
// T and U the trace and the sum of E[l, m] = sum over voters of E[log P_i(l | m)].
struct ConfusionPrior {
  double n, K, T, U;
  DEEM_HD Eval operator()(const double* x) const {
    const double d = x[0], o = x[1], s = K * o + d, a = o + d, nk = n * K;
    double lg_s, lg_a, lg_o;
    const double ps = digamma_lgamma(s, &lg_s), pa = digamma_lgamma(a, &lg_a), po = digamma_lgamma(o, &lg_o);
    const double ts = trigamma(s), ta = trigamma(a), to = K > 1 ? trigamma(o) : 0.0;
    Eval e;
    e.v = nk * (lg_s - lg_a - (K - 1) * lg_o) + d * T + (o - 1) * U;
    e.g[0] = nk * (ps - pa) + T;
    e.g[1] = nk * (K * ps - pa - (K - 1) * po) + U;
    e.h[0] = nk * (ts - ta);
    e.h[1] = nk * (K * ts - ta);
    e.h[2] = nk * (K * K * ts - ta - (K - 1) * to);
    return e;
  }
  // sum over the n K columns of [sum_l lgamma(alpha_l) - lgamma(sum_l alpha_l)]: the prior's normalizers
  DEEM_HD double log_normalizers(const double* x) const {
    const double d = x[0], o = x[1];
    return n * K * ((K - 1) * lgamma_pos(o) + lgamma_pos(o + d) - lgamma_pos(K * o + d));
  }
};

// The Beta(vote, abstain) prior of the n_columns voter-class rates of voting, x = (vote, abstain):
//   n [lgamma(vote + abstain) - lgamma(vote) - lgamma(abstain)] + (vote - 1) e0 + (abstain - 1) e1,
// e0, e1 the sums of E[log f] and E[log (1 - f)] over the modelled columns.
struct RatePrior {
  double n, e0, e1;
  DEEM_HD Eval operator()(const double* x) const {
    const double a = x[0], b = x[1], s = a + b;
    double lg_s, lg_a, lg_b;
    const double ps = digamma_lgamma(s, &lg_s), pa = digamma_lgamma(a, &lg_a), pb = digamma_lgamma(b, &lg_b);
    const double ts = trigamma(s);
    Eval e;
    e.v = n * (lg_s - lg_a - lg_b) + (a - 1) * e0 + (b - 1) * e1;
    e.g[0] = n * (ps - pa) + e0;
    e.g[1] = n * (ps - pb) + e1;
    e.h[0] = n * (ts - trigamma(a));
    e.h[1] = n * ts;
    e.h[2] = n * (ts - trigamma(b));
    return e;
  }
  DEEM_HD double log_normalizers(const double* x) const {
    return n * (lgamma_pos(x[0]) + lgamma_pos(x[1]) - lgamma_pos(x[0] + x[1]));
  }
};

DEEM_HD double clamp_to(double x, double lo, double hi) { return x < lo ? lo : (x > hi ? hi : x); }

// Maximizes the concave f over [lo, hi]^2 from x (in place). Projected Newton: a coordinate at a bound
// whose gradient points out of the box is held there, the others take the Newton step of their block,
// halved until the value does not drop; near the optimum, whole steps until x stops moving (below).
// Also ends when no step keeps the value, or after kMaxNewton steps.
constexpr int kMaxNewton = 100;
constexpr double kNearGain = 1e-10;
constexpr double kStillStep = 1e-14;  // relative: a step this small is at rounding
constexpr int kMaxNear = 8;

template <class F>
DEEM_HD void newton_box(const F& f, double* x, double lo, double hi) {
  x[0] = clamp_to(x[0], lo, hi);
  x[1] = clamp_to(x[1], lo, hi);
  Eval e = f(x);
  int near = 0;  // full steps taken in the quadratic region
  for (int it = 0; it < kMaxNewton; ++it) {
    bool held[2];
    for (int i = 0; i < 2; ++i) held[i] = (x[i] <= lo && e.g[i] < 0) || (x[i] >= hi && e.g[i] > 0);
    double step[2] = {0.0, 0.0};
    const double det = e.h[0] * e.h[2] - e.h[1] * e.h[1];
    if (!held[0] && !held[1] && e.h[0] < 0 && det > 0) {
      step[0] = -(e.h[2] * e.g[0] - e.h[1] * e.g[1]) / det;
      step[1] = -(e.h[0] * e.g[1] - e.h[1] * e.g[0]) / det;
    } else {  // one block at a time (a held coordinate, or a Hessian rounding made indefinite)
      for (int i = 0; i < 2; ++i) {
        const double hii = e.h[2 * i];
        if (!held[i] && hii < 0) step[i] = -e.g[i] / hii;
      }
    }
    // First-order gain of the full step. Once it is within kNearGain of the value, the iterate is in
    // Newton's quadratic region, where a line search would compare values equal to rounding: from
    // there on every step is taken whole, until one no longer moves x beyond rounding. The solve then
    // ends at the optimum itself whatever path led there, so statistics that differ by their
    // summation order (two processes, two thread counts) give the same prior to rounding.
    const double gain = e.g[0] * step[0] + e.g[1] * step[1];
    if (!(gain > 0)) return;  // no ascent direction left
    if (near > 0 || !(gain > kNearGain * (1.0 + fabs(e.v)))) {
      const double y[2] = {clamp_to(x[0] + step[0], lo, hi), clamp_to(x[1] + step[1], lo, hi)};
      const bool still = fabs(y[0] - x[0]) <= kStillStep * fabs(x[0]) && fabs(y[1] - x[1]) <= kStillStep * fabs(x[1]);
      x[0] = y[0];
      x[1] = y[1];
      if (still || ++near >= kMaxNear) return;
      e = f(x);
      continue;
    }
    double t = 1.0;
    bool moved = false;
    for (int halving = 0; halving < 60; ++halving, t *= 0.5) {
      double y[2] = {clamp_to(x[0] + t * step[0], lo, hi), clamp_to(x[1] + t * step[1], lo, hi)};
      const Eval ey = f(y);
      if (ey.v >= e.v) {
        x[0] = y[0];
        x[1] = y[1];
        e = ey;
        moved = true;
        break;
      }
    }
    if (!moved) return;
  }
}

}  // namespace vb
}  // namespace deem
