// Reading a chunk of one model's samples as float64, transposed to [class][sample]: shared by the CPU
// kernels that stage samples (pairwise, progress).
#pragma once
#include <cstdint>

#include "common.h"

#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace taskgeom {
namespace cpu {

// Copy samples [n0, n0 + nc) of model i into t as float64, transposed to [class][sample] (row stride ncp).
// One dtype dispatch per model chunk; the inner loop reads each sample's classes in storage order.
template <typename T, typename Cvt>
inline void gather_typed(const View3& v, int64_t i, int64_t n0, int64_t nc, int64_t ncp, double* t, Cvt cvt) {
  const T* base = reinterpret_cast<const T*>(v.ptr);
  const int64_t C = v.shape[2], s1 = v.stride[1], s2 = v.stride[2];
  const T* row = base + i * v.stride[0] + n0 * s1;
  if (s2 == 1) {
    for (int64_t n = 0; n < nc; ++n, row += s1)
      for (int64_t c = 0; c < C; ++c) t[c * ncp + n] = cvt(row[c]);
  } else {
    for (int64_t n = 0; n < nc; ++n, row += s1)
      for (int64_t c = 0; c < C; ++c) t[c * ncp + n] = cvt(row[c * s2]);
  }
}

// Rows of nc samples x C values (row stride C; float32, or float16 read through F16C) into t[c * ncp + n] as
// float64: the transposing copy that staging starts with. With AVX2, 8 x 8 blocks are transposed in
// registers and each class's 8 samples are written with one store (a scalar transpose writes every value to
// another cache line); the values are the same either way (float16 -> float32 -> float64 is exact).
// With `sums`, each sample's sum over its classes (float64, added in class order from 0.0, as a pass over t
// would) and with `negative` whether any value is below zero are taken on the way, for n < nc.
template <typename T>
inline float load_one(const T* p);
template <>
inline float load_one<float>(const float* p) {
  return *p;
}
template <>
inline float load_one<uint16_t>(const uint16_t* p) {
  return half_to_float(*p);
}

#if defined(__AVX2__)
template <typename T>
inline __m256 load_eight(const T* p);
template <>
inline __m256 load_eight<float>(const float* p) {
  return _mm256_loadu_ps(p);
}
#if defined(__F16C__)
template <>
inline __m256 load_eight<uint16_t>(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
#endif
#endif

#if defined(__AVX2__) && defined(__F16C__)
// Classes c0 .. c0 + 7 of samples n0 .. n0 + 7 (rows of C values): col[k] holds class c0 + k of the 8 samples.
template <typename T>
inline void transpose8x8(const T* src, int64_t C, int64_t n0, int64_t c0, __m256 col[8]) {
  __m256 r[8];
  for (int l = 0; l < 8; ++l) r[l] = load_eight<T>(src + (n0 + l) * C + c0);
  const __m256 a0 = _mm256_unpacklo_ps(r[0], r[1]), a1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 a2 = _mm256_unpacklo_ps(r[2], r[3]), a3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 a4 = _mm256_unpacklo_ps(r[4], r[5]), a5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 a6 = _mm256_unpacklo_ps(r[6], r[7]), a7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 b0 = _mm256_shuffle_ps(a0, a2, 0x44), b1 = _mm256_shuffle_ps(a0, a2, 0xEE);
  const __m256 b2 = _mm256_shuffle_ps(a1, a3, 0x44), b3 = _mm256_shuffle_ps(a1, a3, 0xEE);
  const __m256 b4 = _mm256_shuffle_ps(a4, a6, 0x44), b5 = _mm256_shuffle_ps(a4, a6, 0xEE);
  const __m256 b6 = _mm256_shuffle_ps(a5, a7, 0x44), b7 = _mm256_shuffle_ps(a5, a7, 0xEE);
  col[0] = _mm256_permute2f128_ps(b0, b4, 0x20);
  col[1] = _mm256_permute2f128_ps(b1, b5, 0x20);
  col[2] = _mm256_permute2f128_ps(b2, b6, 0x20);
  col[3] = _mm256_permute2f128_ps(b3, b7, 0x20);
  col[4] = _mm256_permute2f128_ps(b0, b4, 0x31);
  col[5] = _mm256_permute2f128_ps(b1, b5, 0x31);
  col[6] = _mm256_permute2f128_ps(b2, b6, 0x31);
  col[7] = _mm256_permute2f128_ps(b3, b7, 0x31);
}
#endif

// kStore = false: only the sums and negative flags (t is not written; the caller reads the rows again).
template <typename T, bool kStore = true>
inline void transpose_rows(const T* src, int64_t nc, int64_t C, int64_t ncp, double* t, double* sums = nullptr,
                           char* negative = nullptr) {
  int64_t n0 = 0;
#if defined(__AVX2__) && defined(__F16C__)
  for (; n0 + 8 <= nc; n0 += 8) {
    __m256d s_lo = _mm256_setzero_pd(), s_hi = _mm256_setzero_pd();
    __m256 below = _mm256_setzero_ps();
    int64_t c0 = 0;
    for (; c0 + 8 <= C; c0 += 8) {
      __m256 col[8];
      transpose8x8(src, C, n0, c0, col);
      for (int k = 0; k < 8; ++k) {  // col[k]: class c0 + k of samples n0 .. n0 + 7
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(col[k]));
        const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(col[k], 1));
        if (kStore) {
          double* dst = t + (c0 + k) * ncp + n0;
          _mm256_storeu_pd(dst, lo);
          _mm256_storeu_pd(dst + 4, hi);
        }
        if (sums) {
          s_lo = _mm256_add_pd(s_lo, lo);
          s_hi = _mm256_add_pd(s_hi, hi);
          below = _mm256_or_ps(below, _mm256_cmp_ps(col[k], _mm256_setzero_ps(), _CMP_LT_OQ));
        }
      }
    }
    if (sums) {
      _mm256_storeu_pd(sums + n0, s_lo);
      _mm256_storeu_pd(sums + n0 + 4, s_hi);
      const int mask = _mm256_movemask_ps(below);
      for (int l = 0; l < 8; ++l) negative[n0 + l] = (char)((mask >> l) & 1);
    }
    for (; c0 < C; ++c0)
      for (int l = 0; l < 8; ++l) {
        const double x = (double)load_one<T>(src + (n0 + l) * C + c0);
        if (kStore) t[c0 * ncp + n0 + l] = x;
        if (sums) {
          sums[n0 + l] += x;
          negative[n0 + l] |= x < 0;
        }
      }
  }
#endif
  for (int64_t n = n0; n < nc; ++n) {
    double s = 0.0;
    char below = 0;
    for (int64_t c = 0; c < C; ++c) {
      const double x = (double)load_one<T>(src + n * C + c);
      if (kStore) t[c * ncp + n] = x;
      s += x;
      below |= x < 0;
    }
    if (sums) {
      sums[n] = s;
      negative[n] = below;
    }
  }
}

// The rows of model i's samples [n0, n0 + nc) when they are stored contiguously as float16 or float32 (the
// dtypes transpose_rows reads), else null.
template <typename T>
inline const T* contiguous_rows(const View3& v, int64_t i, int64_t n0) {
  if (v.stride[2] != 1 || v.stride[1] != v.shape[2]) return nullptr;
  return reinterpret_cast<const T*>(v.ptr) + i * v.stride[0] + n0 * v.shape[2];
}

// With `sums` and `negative` (ncp entries each), contiguous float16
// and float32 rows also give each sample's class sum and negative flag (see transpose_rows), padding samples
// a sum of 1 and no flag; the return value says whether they did (otherwise the caller sums t itself).
inline bool gather_chunk(const View3& v, int64_t i, int64_t n0, int64_t nc, int64_t ncp, double* t,
                         double* sums = nullptr, char* negative = nullptr) {
  const int64_t C = v.shape[2];
  bool summed = false;
  switch (v.dtype) {
    case kFloat16:
      if (const uint16_t* rows = contiguous_rows<uint16_t>(v, i, n0)) {
        transpose_rows(rows, nc, C, ncp, t, sums, negative);
        summed = sums != nullptr;
        break;
      }
      gather_typed<uint16_t>(v, i, n0, nc, ncp, t, [](uint16_t h) { return (double)half_to_float(h); });
      break;
    case kBFloat16:
      gather_typed<uint16_t>(v, i, n0, nc, ncp, t, [](uint16_t h) { return (double)bf16_to_float(h); });
      break;
    case kFloat64:
      gather_typed<double>(v, i, n0, nc, ncp, t, [](double x) { return x; });
      break;
    default:
      if (const float* rows = contiguous_rows<float>(v, i, n0)) {  // contiguous rows: the vectorised transpose
        transpose_rows(rows, nc, C, ncp, t, sums, negative);
        summed = sums != nullptr;
        break;
      }
      gather_typed<float>(v, i, n0, nc, ncp, t, [](float x) { return (double)x; });
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t n = nc; n < ncp; ++n) t[c * ncp + n] = c == 0 ? 1.0 : 0.0;
  if (summed)
    for (int64_t n = nc; n < ncp; ++n) {
      sums[n] = 1.0;
      negative[n] = 0;
    }
  return summed;
}

}  // namespace cpu
}  // namespace taskgeom
