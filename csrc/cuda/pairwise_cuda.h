#pragma once
#include "common.h"

namespace taskgeom {
namespace cuda {

// Device-pointer version of cpu::pairwise. `out` is a zero-initialised float64 device buffer (ma x mb);
// the launch goes on `stream` (a cudaStream_t as an integer, 0 = legacy default stream).
// `splits` divides the samples among blocks (0: chosen to fill the GPU). Throws on CUDA errors.
void pairwise(const View3& a, const View3* b, double* out, int divergence, int splits, std::uintptr_t stream);

}  // namespace cuda
}  // namespace taskgeom
