// Counter-based Philox4x32-10, usable from host and device code.
// Every random draw in DEEM is a pure function of (seed, counter), so the CPU
// kernels, the CUDA kernels and the PyTorch twins produce the same numbers
// whatever the thread count or launch shape.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define DEEM_HD __host__ __device__ __forceinline__
#else
#define DEEM_HD inline
#endif

namespace deem {

struct Philox4 {
  uint32_t v[4];
};

DEEM_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// key = seed, counter = (c0, c1, c2, c3). Ten rounds, the standard constants.
DEEM_HD Philox4 philox4x32(uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
  uint32_t k0 = static_cast<uint32_t>(seed);
  uint32_t k1 = static_cast<uint32_t>(seed >> 32);
  uint32_t x0 = c0, x1 = c1, x2 = c2, x3 = c3;
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, x0, hi0, lo0);
    philox_mulhilo(0xCD9E8D57u, x2, hi1, lo1);
    const uint32_t n0 = hi1 ^ x1 ^ k0;
    const uint32_t n1 = lo1;
    const uint32_t n2 = hi0 ^ x3 ^ k1;
    const uint32_t n3 = lo0;
    x0 = n0; x1 = n1; x2 = n2; x3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  Philox4 out;
  out.v[0] = x0; out.v[1] = x1; out.v[2] = x2; out.v[3] = x3;
  return out;
}

// A uniform in the open interval (0, 1) from 24 random bits: never 0, never 1.
DEEM_HD double philox_uniform(uint32_t bits) {
  return (static_cast<double>(bits >> 8) + 0.5) * (1.0 / 16777216.0);
}

// The draw for (stream, index) at step `step`: counter (stream, index, lo(step), hi(step)).
DEEM_HD Philox4 philox_draw(uint64_t seed, uint32_t stream, uint32_t index, uint64_t step) {
  return philox4x32(seed, stream, index, static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32));
}

}  // namespace deem
