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
