// Portable 32-byte SIMD helpers of the CPU kernels (GCC/Clang vector
// extensions): vector types, loads/stores and a branch-free exp whose rounding
// does not depend on the instruction set, plus the AVX2/baseline clone macro.
#pragma once
#include <cstdint>
#include <cstring>

// The 32-byte vector helpers below are always inlined: the
// "AVX vector return without AVX enabled changes the ABI" note does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace deem {
namespace cpu {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(_WIN32)
// AVX2 and baseline clones, chosen at load time. No FMA, so every clone rounds
// identically (each element goes through the same sequence of operations).
#define DEEM_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DEEM_CLONES
#endif

// 32-byte vectors (GCC/Clang vector extensions): 8 floats or 4 doubles.
template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float v __attribute__((vector_size(32)));
  typedef int32_t vi __attribute__((vector_size(32)));
  typedef int32_t lane;
  static constexpr int N = 8;
};
template <>
struct Vec<double> {
  typedef double v __attribute__((vector_size(32)));
  typedef int64_t vi __attribute__((vector_size(32)));
  typedef int64_t lane;
  static constexpr int N = 4;
};

// exp(x) for x <= 0 (or -inf): 0 below the smallest normal result. Range
// reduction x = n ln2 + r (|r| <= ln2/2), polynomial in r, times 2^n built in
// the exponent bits. Branch-free, about 1 ulp. Same operations in every clone
// (no FMA), so results do not depend on the CPU.
static inline __attribute__((always_inline)) Vec<float>::v vexp(Vec<float>::v x) {
  typedef Vec<float>::v v;
  typedef Vec<float>::vi vi;
  const vi ok = x >= -87.0f;
  x = (v)(((vi)x & ok) | ((vi)(v{} - 87.0f) & ~ok));
  const v t = x * 1.44269504088896341f + 12582912.0f;  // 1.5 * 2^23: round(x / ln2) in the low bits
  const v fn = t - 12582912.0f;
  v r = x - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  v p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const v y = (p * r) * r + r + 1.0f;
  const vi bits = ((vi)t - 0x4B400000 + 127) << 23;
  return (v)((vi)(y * (v)bits) & ok);
}

static inline __attribute__((always_inline)) Vec<double>::v vexp(Vec<double>::v x) {
  typedef Vec<double>::v v;
  typedef Vec<double>::vi vi;
  const vi ok = x >= -708.0;
  x = (v)(((vi)x & ok) | ((vi)(v{} - 708.0) & ~ok));
  const v t = x * 1.4426950408889634074 + 6755399441055744.0;  // 1.5 * 2^52
  const v fn = t - 6755399441055744.0;
  v r = x - fn * 6.93145751953125e-1;
  r = r - fn * 1.42860682030941723212e-6;
  // Taylor series to r^12 / 12!: |error| < 3e-17 for |r| <= ln2 / 2.
  v p = r * (1.0 / 479001600.0) + (1.0 / 39916800.0);
  p = p * r + (1.0 / 3628800.0);
  p = p * r + (1.0 / 362880.0);
  p = p * r + (1.0 / 40320.0);
  p = p * r + (1.0 / 5040.0);
  p = p * r + (1.0 / 720.0);
  p = p * r + (1.0 / 120.0);
  p = p * r + (1.0 / 24.0);
  p = p * r + (1.0 / 6.0);
  p = p * r + 0.5;
  const v y = (p * r) * r + r + 1.0;
  const vi bits = ((vi)t - 0x4338000000000000LL + 1023) << 52;
  return (v)((vi)(y * (v)bits) & ok);
}

// log(x) for normal, finite x > 0 (fdlibm's e_log.c, branch-free): x = 2^k (1 + f) with 1 + f in
// [sqrt(2)/2, sqrt(2)), log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)), s = f / (2 + f), R fdlibm's
// degree-14 minimax fit; about 1 ulp. Anything else (zero, negative, subnormal, inf, NaN): NaN -- the
// callers pass pseudo-counts and partition sums, and mask the lanes they treat apart. Same operations
// in every clone (no FMA), so results do not depend on the CPU.
static inline __attribute__((always_inline)) Vec<double>::v vlog(Vec<double>::v x) {
  typedef Vec<double>::v v;
  typedef Vec<double>::vi vi;
  const vi bits = (vi)x;
  const vi ok = (x >= 2.2250738585072014e-308) & (x <= 1.7976931348623157e308);
  const vi mant = bits & 0x000fffffffffffffLL;
  // 1 << 52 where the mantissa is at least sqrt(2) - 1: that x is scaled by 1/2 (fdlibm's test, on 64 bits)
  const vi half = (mant + (0x95f64LL << 32)) & (1LL << 52);
  const v m = (v)(mant | (half ^ (0x3ffLL << 52)));
  // k as a double without an int64 conversion: the biased exponent in the low bits of 2^52
  const v k = (v)(0x4330000000000000LL | (((bits >> 52) & 0x7ff) + (half >> 52))) - (4503599627370496.0 + 1023.0);
  const v f = m - 1.0;
  const v hfsq = 0.5 * f * f, s = f / (2.0 + f), z = s * s, w = z * z;
  const v t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01));
  const v t2 = z * (6.666666666666735130e-01 +
                    w * (2.857142874366239149e-01 + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
  const v r = k * 6.93147180369123816490e-01 - ((hfsq - (s * (hfsq + (t2 + t1)) + k * 1.90821492927058770002e-10)) - f);
  const v nan = v{} + __builtin_nan("");
  return (v)(((vi)r & ok) | ((vi)nan & ~ok));
}

// Lane-wise select: a where mask, else b.
static inline __attribute__((always_inline)) Vec<double>::v vselect(Vec<double>::vi mask, Vec<double>::v a,
                                                                    Vec<double>::v b) {
  return (Vec<double>::v)(((Vec<double>::vi)a & mask) | ((Vec<double>::vi)b & ~mask));
}

template <typename T>
using VI = typename Vec<T>::vi;
template <typename T>
using VT = typename Vec<T>::v;

template <typename V>
static inline __attribute__((always_inline)) V vload(const void* p) {
  V x;
  std::memcpy(&x, p, sizeof(V));
  return x;
}
template <typename V>
static inline __attribute__((always_inline)) void vstore(void* p, V x) {
  std::memcpy(p, &x, sizeof(V));
}

}  // namespace cpu
}  // namespace deem
