#pragma once
#include <string>
#include <vector>

#include "common.h"

namespace taskgeom {
namespace cuda {

// The fp64 tensor-core kernel for the Gram-form divergences (Bhattacharyya, squared Hellinger), see
// pairwise_fp64tc.cu. Same contract as cuda::pairwise: results are *added* to the zeroed float64 device
// buffer `out` (ma x mb) divided by `norm` (0: this call's N); `mirror` copies the upper triangle down.
// `scratch`: a float64 device buffer of `scratch_doubles` for the staged sample chunks (at least
// fp64tc_scratch_doubles(..., 1)). `config`: an index into fp64tc_configs().
void pairwise_fp64tc(const View3& a, const double* a_inv, const View3* b, const double* b_inv, double* out,
                     int divergence, int64_t norm, bool mirror, double* scratch, int64_t scratch_doubles, int config,
                     std::uintptr_t stream);

// float64 scratch needed to stage `samples` samples with `config`.
int64_t fp64tc_scratch_doubles(int64_t ma, int64_t mb, bool cross, int64_t C, int config, int64_t samples);

// Names of the compiled-in instances ("t64_w4x2_k8": 64 x 64 model pairs per block, 4 x 2 fragments of
// 8 x 8 pairs per warp, 8 k-steps of 4 classes per shared-memory stage; "mma1684_t64_w2x2_k8": the same
// with m16n8k4 fragments of 16 x 8 pairs; "mma1684_t64_w2x2_k8_s3p": the same on the pipelined path with 3
// shared-memory stages and register prefetch of operands; "mma1684_t128_w4x4_k6_c12": the lean path for at
// most 12 classes), in config order.
std::vector<std::string> fp64tc_configs();

// The compute capability (x10: 80, 90) each instance needs, in config order ("mma1684_" and "mma1688_"
// instances use the sm_90 FP64 mma shapes).
std::vector<int> fp64tc_config_archs();

// The most classes each instance handles (0: any), in config order: the lean "..._c12" / "..._c16"
// instances hold one sample's classes in registers.
std::vector<int> fp64tc_config_max_classes();

// Whether the current device can run the kernel: compute capability >= 8.0 and a binary built for it
// with FP64 tensor-core instructions (a module built for older architectures only has none).
bool fp64tc_available();

}  // namespace cuda
}  // namespace taskgeom
