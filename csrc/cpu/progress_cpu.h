#pragma once
#include <memory>

#include "common.h"
#include "cpu/short_jobs.h"

namespace taskgeom {
namespace cpu {

// Progress (eq. 4) of each of m models (m x N x C view) on the geodesic from ignorance P0 to truth P*
// given by `labels` (N int64 in [0, C)): out[i] = argmin_{lambda in [0,1]} d_B(P_i, P_{0,*}^lambda).
// Models are shared among the caller and helper threads without a barrier (short_jobs.h); when `job_out` is
// given it receives the job, whose `idle()` says when no helper reads `a` or `labels` any more.
BadInput progress(const View3& a, const int64_t* labels, double* out, int threads, bool validate, double tol,
                  double xtol, std::shared_ptr<ShortJob>* job_out = nullptr);

// The 1-d solve shared by every progress computation: given per-sample inner products
// alpha_n = <sqrt p_n, sqrt u_n>, beta_n = <sqrt p_n, sqrt v_n> and the constant half-angle theta of
// the geodesic u -> v, return argmin over [0, 1] of -mean_n log(sin((1-l)theta) alpha_n + sin(l theta) beta_n).
double solve_lambda(const double* alpha, const double* beta, int64_t n, double theta, double xtol);

}  // namespace cpu
}  // namespace taskgeom
