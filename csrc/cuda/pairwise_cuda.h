#pragma once
#include "common.h"

namespace taskgeom {
namespace cuda {

// Device-pointer version of cpu::pairwise. `out` is a zero-initialised float64 device buffer (ma x mb);
// the launch goes on `stream` (a cudaStream_t as an integer, 0 = legacy default stream).
// `splits` divides the samples among blocks (0: chosen to fill the GPU). Results are *added* to `out`
// divided by `norm` (the total number of samples, 0: this call's N), so a caller can stream sample
// chunks into one matrix; `mirror` copies the upper triangle down at the end (symmetric case).
// Throws on CUDA errors.
// `a_inv` / `b_inv`: float64 device arrays (m x N) of 1 / sum_c p, the row normalisation.
void pairwise(const View3& a, const double* a_inv, const View3* b, const double* b_inv, double* out, int divergence,
              int splits, int64_t norm, bool mirror, std::uintptr_t stream);

}  // namespace cuda
}  // namespace taskgeom
