// Batched progress on the ignorance -> truth geodesic (eq. 4) on the CPU.
//
// With sqrt P0 = 1/sqrt(C) and sqrt P* = e_y, the Bhattacharyya coefficient between a model and the
// geodesic point at lambda is (sin((1-l)t) alpha_n + sin(l t) beta_n) / sin t per sample, where
// alpha_n = sum_c sqrt p_nc / sqrt C and beta_n = sqrt p_{n,y_n}: each evaluation costs O(N).
// f(l) = -mean log D_n(l) is convex (D'' = -t^2 D), so a bracketed Newton iteration on f' converges
// quadratically: f' = -mean D'/D, f'' = t^2 + mean (D'/D)^2.
#include "cpu/progress_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace taskgeom {
namespace cpu {

namespace {
// f'(l) and f''(l); f' is +inf where some D_n <= 0 at l = 1 (f -> +inf there). Vectorised over samples.
void derivatives(const double* alpha, const double* beta, int64_t n, double theta, double l, double* g, double* h) {
  const double sa = std::sin((1 - l) * theta), sb = std::sin(l * theta);
  const double ca = -theta * std::cos((1 - l) * theta), cb = theta * std::cos(l * theta);
  double s1 = 0.0, s2 = 0.0, dmin = std::numeric_limits<double>::infinity();
#pragma omp simd reduction(+ : s1, s2) reduction(min : dmin)
  for (int64_t k = 0; k < n; ++k) {
    const double D = sa * alpha[k] + sb * beta[k];
    const double Dp = ca * alpha[k] + cb * beta[k];
    const double r = D > 0 ? Dp / D : 0.0;
    s1 += r;
    s2 += r * r;
    dmin = std::min(dmin, D);
  }
  *g = dmin <= 0 ? std::numeric_limits<double>::infinity() : -s1 / (double)n;
  *h = theta * theta + s2 / (double)n;
}
}  // namespace

double solve_lambda(const double* alpha, const double* beta, int64_t n, double theta, double xtol) {
  double g, h;
  derivatives(alpha, beta, n, theta, 0.0, &g, &h);
  if (g >= 0) return 0.0;
  derivatives(alpha, beta, n, theta, 1.0, &g, &h);
  if (g <= 0) return 1.0;
  double lo = 0.0, hi = 1.0, l = 0.5;
  for (int it = 0; it < 200; ++it) {
    derivatives(alpha, beta, n, theta, l, &g, &h);
    if (g > 0)
      hi = l;
    else
      lo = l;
    double next = l - g / h;
    if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
    const double step = std::fabs(next - l);
    l = next;
    if (step < 1e-3 * xtol || hi - lo < xtol) break;
  }
  return l;
}

BadInput progress(const View3& a, const int64_t* labels, double* out, int threads, bool validate, double tol,
                  double xtol) {
  const int64_t m = a.shape[0], N = a.shape[1], C = a.shape[2];
  const void* base = reinterpret_cast<const void*>(a.ptr);
  const double theta = std::acos(1.0 / std::sqrt((double)C));
  const double inv_sqrt_c = 1.0 / std::sqrt((double)C);
  BadInput bad;
  for (int64_t k = 0; k < N; ++k) {
    if (labels[k] < 0 || labels[k] >= C) {
      bad.kind = kBadLabel;
      bad.model = -1;
      bad.sample = k;
      bad.value = (double)labels[k];
      return bad;
    }
  }
  const int old_threads = omp_get_max_threads();
  if (threads > 0) omp_set_num_threads(threads);
#pragma omp parallel
  {
    std::vector<double> alpha(N), beta(N), row(C);
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < m; ++i) {
      bool ok = true;
      for (int64_t k = 0; k < N && ok; ++k) {
        const int64_t at = i * a.stride[0] + k * a.stride[1];
        for (int64_t c = 0; c < C; ++c) row[c] = load_as_double(base, a.dtype, at + c * a.stride[2]);
        double sr = 0.0, sum = 0.0, pmin = 0.0;
        bool finite = true;
#pragma omp simd reduction(+ : sr, sum) reduction(min : pmin) reduction(&& : finite)
        for (int64_t c = 0; c < C; ++c) {
          const double p = row[c];
          finite = finite && std::isfinite(p);
          pmin = std::min(pmin, p);
          sum += p;
          sr += std::sqrt(p > 0 ? p : 0.0);
        }
        if (validate && (!finite || pmin < 0 || std::fabs(sum - 1.0) > tol)) {
          int kind = kNotNormalised;
          double value = sum;
          for (int64_t c = 0; c < C; ++c) {
            if (!std::isfinite(row[c])) {
              kind = kNonFinite;
              value = row[c];
              break;
            }
            if (row[c] < 0) {
              kind = kNegative;
              value = row[c];
              break;
            }
          }
#pragma omp critical(taskgeom_progress_bad)
          if (bad.kind == kOk || i < bad.model) {
            bad.kind = kind;
            bad.model = i;
            bad.sample = k;
            bad.value = value;
          }
          ok = false;
          break;
        }
        // rows are renormalised: sqrt(p / sum) = sqrt(p) / sqrt(sum)
        const double norm = sum > 0 ? 1.0 / std::sqrt(sum) : 0.0;
        alpha[k] = sr * inv_sqrt_c * norm;
        beta[k] = std::sqrt(std::max(row[labels[k]], 0.0)) * norm;
      }
      out[i] = ok ? solve_lambda(alpha.data(), beta.data(), N, theta, xtol) : std::numeric_limits<double>::quiet_NaN();
    }
  }
  if (threads > 0) omp_set_num_threads(old_threads);
  return bad;
}

}  // namespace cpu
}  // namespace taskgeom
