#pragma once
#include "common.h"

namespace taskgeom {
namespace cpu {

// out[i, j] = divergence between model i of `a` and model j of `b` (or of `a` when b == nullptr, in
// which case only one triangle is computed and mirrored). out is row-major float64 (ma x mb).
// Samples are streamed in chunks of `chunk` (0: chosen from the cache size); `threads` <= 0 uses
// OpenMP's default. Returns the first invalid input found when `validate` is set.
BadInput pairwise(const View3& a, const View3* b, double* out, int divergence, int64_t chunk, int threads,
                  bool validate, double tol);

}  // namespace cpu
}  // namespace taskgeom
