// Reading a chunk of one model's samples as float64, transposed to [class][sample]: shared by the CPU
// kernels that stage samples (pairwise, progress).
#pragma once
#include <cstdint>

#include "common.h"

#if defined(__F16C__)
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

#if defined(__F16C__)
// float16 rows stored contiguously: convert 8 values per instruction, then transpose.
inline void gather_half_contiguous(const uint16_t* src, int64_t nc, int64_t C, int64_t ncp, double* t, float* raw) {
  const int64_t total = nc * C;
  int64_t k = 0;
  for (; k + 8 <= total; k += 8)
    _mm256_storeu_ps(raw + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k))));
  for (; k < total; ++k) raw[k] = half_to_float(src[k]);
  for (int64_t n = 0; n < nc; ++n)
    for (int64_t c = 0; c < C; ++c) t[c * ncp + n] = (double)raw[n * C + c];
}
#endif

// raw: scratch of at least nc * C floats.
inline void gather_chunk(const View3& v, int64_t i, int64_t n0, int64_t nc, int64_t ncp, double* t,
                         [[maybe_unused]] float* raw) {
  const int64_t C = v.shape[2];
  switch (v.dtype) {
    case kFloat16:
#if defined(__F16C__)
      if (v.stride[2] == 1 && v.stride[1] == C) {
        gather_half_contiguous(reinterpret_cast<const uint16_t*>(v.ptr) + i * v.stride[0] + n0 * C, nc, C, ncp, t, raw);
        break;
      }
#endif
      gather_typed<uint16_t>(v, i, n0, nc, ncp, t, [](uint16_t h) { return (double)half_to_float(h); });
      break;
    case kBFloat16:
      gather_typed<uint16_t>(v, i, n0, nc, ncp, t, [](uint16_t h) { return (double)bf16_to_float(h); });
      break;
    case kFloat64:
      gather_typed<double>(v, i, n0, nc, ncp, t, [](double x) { return x; });
      break;
    default:
      gather_typed<float>(v, i, n0, nc, ncp, t, [](float x) { return (double)x; });
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t n = nc; n < ncp; ++n) t[c * ncp + n] = c == 0 ? 1.0 : 0.0;
}

}  // namespace cpu
}  // namespace taskgeom
