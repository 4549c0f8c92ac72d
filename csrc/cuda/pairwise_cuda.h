#pragma once
#include "common.h"

namespace taskgeom {
namespace cuda {

// Device-pointer version of cpu::pairwise. `out` is a zero-initialised float64 device buffer (ma x mb);
// the launch goes on `stream` (a cudaStream_t as an integer, 0 = legacy default stream).
// Samples are divided among blocks so as to fill the GPU. Results are *added* to `out`
// divided by `norm` (the total number of samples, 0: this call's N), so a caller can stream sample
// chunks into one matrix; `mirror` copies the upper triangle down at the end (symmetric case).
// Throws on CUDA errors.
// `a_inv` / `b_inv`: float64 device arrays (m x N) of 1 / sum_c p, the row normalisation.
// `scratch`: a device buffer of `scratch_floats` floats for the staged sample chunks (see
// pairwise_scratch_floats: at least one sample's worth; more samples per chunk means fewer launches).
void pairwise(const View3& a, const double* a_inv, const View3* b, const double* b_inv, double* out, int divergence,
              int64_t norm, bool mirror, float* scratch, int64_t scratch_floats, std::uintptr_t stream);

// Floats of scratch needed to stage `samples` samples.
int64_t pairwise_scratch_floats(int64_t ma, int64_t mb, bool cross, int64_t C, int divergence, int64_t samples);

}  // namespace cuda
}  // namespace taskgeom
