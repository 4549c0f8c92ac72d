// Shared definitions of taskgeom's native kernels: strided array views, dtype codes, constants.
// Kernels take raw buffers (numpy arrays or torch tensors' data pointers); nothing here links libtorch.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "divergence.h"

#if defined(__F16C__) && !defined(__CUDACC__)
#include <immintrin.h>
#endif

#if defined(__CUDACC__)
#define TG_HD __host__ __device__ __forceinline__
#else
#define TG_HD inline
#endif

namespace taskgeom {

// dtype codes shared with taskgeom/kernels.py
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// Per-sample Bhattacharyya coefficients below this floor are raised to it, so that disjoint
// supports (BC = 0) give the finite per-sample distance -log(BC_FLOOR) = 69.08 (documented in Python).
constexpr double kBCFloor = 1e-30;
// Probabilities below this floor are raised to it inside logarithms (symmetric KL only).
constexpr double kProbFloor = 1e-30;

// A strided 3-d view (models x samples x classes) over a raw buffer; strides in elements.
struct View3 {
  std::uintptr_t ptr = 0;
  int dtype = kFloat32;
  int64_t shape[3] = {0, 0, 0};
  int64_t stride[3] = {0, 0, 0};
};

TG_HD float bits_as_float(uint32_t bits) {
  float f;
#if defined(__CUDA_ARCH__)
  f = __uint_as_float(bits);
#else
  std::memcpy(&f, &bits, 4);
#endif
  return f;
}

TG_HD float half_to_float(uint16_t h) {
#if defined(__F16C__) && !defined(__CUDACC__)
  return _cvtsh_ss(h);
#else
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while ((man & 0x400u) == 0);
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / nan
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  return bits_as_float(bits);
#endif
}

TG_HD float bf16_to_float(uint16_t h) {
  return bits_as_float((uint32_t)h << 16);
}

// Load element `offset` (in elements) of a buffer of the given dtype as float32 (float64 is rounded).
TG_HD float load_as_float(const void* base, int dtype, int64_t offset) {
  switch (dtype) {
    case kFloat16:
      return half_to_float(static_cast<const uint16_t*>(base)[offset]);
    case kBFloat16:
      return bf16_to_float(static_cast<const uint16_t*>(base)[offset]);
    case kFloat64:
      return (float)static_cast<const double*>(base)[offset];
    default:
      return static_cast<const float*>(base)[offset];
  }
}

TG_HD double load_as_double(const void* base, int dtype, int64_t offset) {
  if (dtype == kFloat64) return static_cast<const double*>(base)[offset];
  return (double)load_as_float(base, dtype, offset);
}

// -log(1 - h) for h in [0, 0.5], accurate to a few float32 ulps relative for every h (no
// cancellation as h -> 0): -log(1-h) = 2 atanh(u) with u = h / (2 - h) <= 1/3, by its odd series.
TG_HD float neg_log1m(float h) {
  float u = h / (2.0f - h);
  float u2 = u * u;
  float p = 1.0f / 19.0f;
  p = p * u2 + 1.0f / 17.0f;
  p = p * u2 + 1.0f / 15.0f;
  p = p * u2 + 1.0f / 13.0f;
  p = p * u2 + 1.0f / 11.0f;
  p = p * u2 + 1.0f / 9.0f;
  p = p * u2 + 1.0f / 7.0f;
  p = p * u2 + 1.0f / 5.0f;
  p = p * u2 + 1.0f / 3.0f;
  p = p * u2 + 1.0f;
  return 2.0f * u * p;
}

// Problems found while reading input, reported to Python as ValueError.
enum BadKind : int { kOk = 0, kNonFinite = 1, kNegative = 2, kNotNormalised = 3, kBadLabel = 4 };

struct BadInput {
  int kind = kOk;
  int which = 0;  // 0: models, 1: others
  int64_t model = -1, sample = -1;
  double value = 0.0;
};

std::string describe_bad(const BadInput& b, const char* which);

}  // namespace taskgeom
