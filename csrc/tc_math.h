// Per-pair arithmetic of the Gram-form kernels that is shared between the host and the device: the
// running product of per-sample Bhattacharyya coefficients, the exact split of its exponent, and one
// logarithm per product. Compiled into taskgeom._C (tested there against float64 NumPy, see
// tests/test_tc_math.py) and into the fp64 tensor-core kernel (cuda/pairwise_fp64tc.cu).
//
// Accuracy argument. BC = sum_c sqrt(p_c) sqrt(q_c) is formed with float64 FMAs: its absolute error is a
// few 1e-16 (C terms of size <= 1, partial sums <= 1). A product P of such factors near 1 keeps that
// absolute error per factor (each multiplication adds <= 2^-53 relative). -log(P 2^E) is evaluated as
// -(e + E) log 2 - log1p(f) with P = (1 + f) 2^e, 1 + f in [sqrt(1/2), sqrt(2)): f = m - 1 is exact
// (Sterbenz), so for P near 1 no cancellation happens and -log1p(f) is -log(1 - h) with h = 1 - P
// carried exactly. At d = 1e-9 per sample the absolute error ~2e-16 per sample is 2e-7 relative, well
// inside the 1e-5 target (it would be 1e-5 only at d ~ 2e-11 per sample).
#pragma once
#include <cstdint>
#include <cstring>

#include "common.h"

#if !defined(__CUDA_ARCH__)
#include <cmath>
#endif

namespace taskgeom {
namespace tc {

// BC of this many consecutive samples are multiplied before the product's exponent is split off: the
// product of 8 factors >= kBCFloor = 1e-30 and a mantissa >= 1 stays >= 1e-240, a normal float64.
constexpr int kSplitEvery = 8;

TG_HD int64_t bits_of(double x) {
#if defined(__CUDA_ARCH__)
  return __double_as_longlong(x);
#else
  int64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
#endif
}

TG_HD double double_of(int64_t b) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(b);
#else
  double x;
  std::memcpy(&x, &b, sizeof x);
  return x;
#endif
}

// One factor of the product: BC floored at kBCFloor (disjoint supports give 69.08 per sample).
TG_HD double floored(double bc) {
  return fmax(bc, kBCFloor);  // one DMNMX on the device; a NaN BC becomes the floor (inputs are validated upstream)
}

// For a normal p > 0: returns m in [1, 2) with p = m 2^e and adds e to E (exact).
TG_HD double split_exponent(double p, int& E) {
  const int64_t b = bits_of(p);
  E += (int)((b >> 52) & 0x7ff) - 1023;
  return double_of((b & 0x000fffffffffffffLL) | 0x3ff0000000000000LL);
}

// -log(p 2^E) for a normal p > 0, with p reduced to (1 + f) 2^e, 1 + f in [sqrt(1/2), sqrt(2)), f exact.
TG_HD double neg_log(double p, int E) {
  double m = split_exponent(p, E);
  if (m > 1.4142135623730951) {
    m *= 0.5;
    E += 1;
  }
  const double f = m - 1.0;  // exact: m in [0.70, 1.42)
  return -((double)E * 0.6931471805599453 + log1p(f));
}

// The running product of one pair: multiply(bc) per sample, renormalise() at least every kSplitEvery
// samples, finish() for -log of the product (the sum of per-sample -log BC over the samples seen).
struct Product {
  double p = 1.0;
  int E = 0;
  TG_HD void multiply(double bc) { p *= floored(bc); }
  TG_HD void renormalise() { p = split_exponent(p, E); }
  TG_HD double finish() const { return neg_log(p, E); }
};

}  // namespace tc
}  // namespace taskgeom
