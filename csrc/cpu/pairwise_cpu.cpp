// Tiled, streaming pairwise Bhattacharyya / symmetric-KL matrices on the CPU (OpenMP + SIMD).
//
// Bhattacharyya, per sample: 1 - BC = h = 1/2 sum_c (sqrt p_c - sqrt q_c)^2, d = -log(1 - h).
// sqrt p is staged as a float32 pair hi + lo (hi = fl(sqrt p), lo = fl(sqrt p - hi), computed in
// float64) so that sqrt p - sqrt q = (hi_p - hi_q) + (lo_p - lo_q) keeps full relative accuracy for
// near-identical models; -log(1 - h) uses a cancellation-free series for h <= 1/2 and -log(BC) with
// BC = sum_c hi_p hi_q (accurate when small) otherwise. Per-sample values are summed in float64.
//
// Symmetric KL, per sample: sum_c (p_c - q_c) (log p_c - log q_c) with log p staged as hi + lo.
#include "cpu/pairwise_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <vector>

namespace taskgeom {
namespace cpu {
namespace {

constexpr int kW = 8;   // SIMD lanes (float32)
constexpr int kTJ = 4;  // models of b per register tile
typedef float v8 __attribute__((vector_size(kW * sizeof(float))));

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float[], AlignedFree>;

Buffer make_buffer(size_t n) {
  size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
  if (bytes == 0) bytes = 64;
  float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!p) throw std::bad_alloc();
  return Buffer(p);
}

// One sample chunk of one model set, staged as [model][class][sample] with samples padded to ncp.
struct Stage {
  int64_t m = 0, C = 0, ncp = 0;
  Buffer x, y, z;
  void allocate(int64_t m_, int64_t C_, int64_t ncp_, int div) {
    m = m_; C = C_; ncp = ncp_;
    size_t n = (size_t)m * C * ncp;
    x = make_buffer(n);
    y = make_buffer(n);
    if (div == kSymmetricKL) z = make_buffer(n);
  }
};

void record(BadInput& bad, int which, int kind, int64_t model, int64_t sample, double value) {
#pragma omp critical(taskgeom_bad_input)
  {
    bool earlier = bad.kind == kOk || which < bad.which ||
                   (which == bad.which && (model < bad.model || (model == bad.model && sample < bad.sample)));
    if (earlier) {
      bad.kind = kind; bad.which = which; bad.model = model; bad.sample = sample; bad.value = value;
    }
  }
}

void stage_chunk(const View3& v, int64_t n0, int64_t nc, Stage& s, int div, bool validate, double tol,
                 BadInput& bad, int which) {
  const int64_t m = v.shape[0], C = v.shape[2], ncp = s.ncp;
  const void* base = reinterpret_cast<const void*>(v.ptr);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t n = 0; n < ncp; ++n) {
      const bool pad = n >= nc;
      const int64_t row = i * v.stride[0] + (n0 + n) * v.stride[1];
      double sum = 0.0;
      for (int64_t c = 0; c < C; ++c) {
        const size_t at = ((size_t)i * C + c) * ncp + n;
        if (pad) {
          s.x[at] = 0.f; s.y[at] = 0.f;
          if (div == kSymmetricKL) s.z[at] = 0.f;
          continue;
        }
        double p = load_as_double(base, v.dtype, row + c * v.stride[2]);
        if (validate) {
          if (!std::isfinite(p)) record(bad, which, kNonFinite, i, n0 + n, p);
          else if (p < 0) record(bad, which, kNegative, i, n0 + n, p);
        }
        sum += p;
        p = p > 0 ? p : 0.0;
        if (div == kBhattacharyya) {
          double r = std::sqrt(p);
          float hi = (float)r;
          s.x[at] = hi;
          s.y[at] = (float)(r - (double)hi);
        } else {
          double lp = std::log(std::max(p, kProbFloor));
          float lh = (float)lp;
          s.x[at] = (float)p;
          s.y[at] = lh;
          s.z[at] = (float)(lp - (double)lh);
        }
      }
      if (validate && !pad && std::isfinite(sum) && std::fabs(sum - 1.0) > tol)
        record(bad, which, kNotNormalised, i, n0 + n, sum);
    }
  }
}

inline v8 vload(const float* p) { return *reinterpret_cast<const v8*>(p); }

// Sum over the lanes of one block of per-sample Bhattacharyya distances.
inline double finish_bhattacharyya(v8 h2, v8 s) {
  v8 h = h2 * 0.5f;
  double total = 0.0;
  for (int l = 0; l < kW; ++l) {
    float hv = h[l];
    total += hv <= 0.5f ? (double)neg_log1m(hv) : -std::log(std::max((double)s[l], kBCFloor));
  }
  return total;
}

void compute_pairs(const Stage& A, const Stage& B, bool symmetric, int div, double* acc) {
  const int64_t ma = A.m, mb = B.m, C = A.C, ncp = A.ncp;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < ma; ++i) {
    const int64_t j_begin = symmetric ? i : 0;
    for (int64_t j0 = j_begin; j0 < mb; j0 += kTJ) {
      const int64_t jn = std::min<int64_t>(kTJ, mb - j0);
      int64_t jj[kTJ];
      for (int t = 0; t < kTJ; ++t) jj[t] = j0 + std::min<int64_t>(t, jn - 1);
      double sums[kTJ] = {0.0, 0.0, 0.0, 0.0};
      for (int64_t nb = 0; nb < ncp; nb += kW) {
        if (div == kBhattacharyya) {
          v8 h[kTJ] = {}, s[kTJ] = {};
          for (int64_t c = 0; c < C; ++c) {
            const size_t ao = ((size_t)i * C + c) * ncp + nb;
            const v8 ah = vload(&A.x[ao]), al = vload(&A.y[ao]);
            for (int t = 0; t < kTJ; ++t) {
              const size_t bo = ((size_t)jj[t] * C + c) * ncp + nb;
              const v8 bh = vload(&B.x[bo]), bl = vload(&B.y[bo]);
              const v8 d = (ah - bh) + (al - bl);
              h[t] += d * d;
              s[t] += ah * bh;
            }
          }
          for (int t = 0; t < kTJ; ++t) sums[t] += finish_bhattacharyya(h[t], s[t]);
        } else {
          v8 k[kTJ] = {};
          for (int64_t c = 0; c < C; ++c) {
            const size_t ao = ((size_t)i * C + c) * ncp + nb;
            const v8 ap = vload(&A.x[ao]), ah = vload(&A.y[ao]), al = vload(&A.z[ao]);
            for (int t = 0; t < kTJ; ++t) {
              const size_t bo = ((size_t)jj[t] * C + c) * ncp + nb;
              const v8 dl = (ah - vload(&B.y[bo])) + (al - vload(&B.z[bo]));
              k[t] += (ap - vload(&B.x[bo])) * dl;
            }
          }
          for (int t = 0; t < kTJ; ++t) {
            double tot = 0.0;
            for (int l = 0; l < kW; ++l) tot += (double)k[t][l];
            sums[t] += tot;
          }
        }
      }
      for (int t = 0; t < jn; ++t) acc[i * mb + j0 + t] += sums[t];
    }
  }
}

}  // namespace

BadInput pairwise(const View3& a, const View3* b, double* out, int divergence, int64_t chunk, int threads,
                  bool validate, double tol) {
  const bool symmetric = (b == nullptr);
  const View3& bv = symmetric ? a : *b;
  const int64_t ma = a.shape[0], mb = bv.shape[0], N = a.shape[1], C = a.shape[2];
  const int old_threads = omp_get_max_threads();
  if (threads > 0) omp_set_num_threads(threads);

  // Samples per chunk: the staged chunk of every model (8 or 12 bytes per entry) stays in cache.
  int64_t nc = chunk;
  if (nc <= 0) {
    const double bytes_per_sample = (double)(ma + (symmetric ? 0 : mb)) * C * (divergence == kSymmetricKL ? 12 : 8);
    nc = (int64_t)((4.0 * 1024 * 1024) / std::max(bytes_per_sample, 1.0));
    nc = std::max<int64_t>(kW, std::min<int64_t>(nc, 512));
  }
  nc = std::min(nc, N);
  const int64_t ncp = ((nc + kW - 1) / kW) * kW;

  Stage A, B;
  A.allocate(ma, C, ncp, divergence);
  if (!symmetric) B.allocate(mb, C, ncp, divergence);
  std::vector<double> acc((size_t)ma * mb, 0.0);
  BadInput bad;

  for (int64_t n0 = 0; n0 < N; n0 += nc) {
    const int64_t len = std::min(nc, N - n0);
    stage_chunk(a, n0, len, A, divergence, validate, tol, bad, 0);
    if (!symmetric) stage_chunk(bv, n0, len, B, divergence, validate, tol, bad, 1);
    if (bad.kind != kOk) break;
    compute_pairs(A, symmetric ? A : B, symmetric, divergence, acc.data());
  }
  if (threads > 0) omp_set_num_threads(old_threads);
  if (bad.kind != kOk) return bad;

  const double inv_n = 1.0 / (double)N;
  for (int64_t i = 0; i < ma; ++i) {
    for (int64_t j = 0; j < mb; ++j) {
      if (symmetric && j < i) continue;
      double d = acc[i * mb + j] * inv_n;
      if (symmetric && i == j) d = 0.0;
      out[i * mb + j] = d;
      if (symmetric) out[j * mb + i] = d;
    }
  }
  return bad;
}

}  // namespace cpu
}  // namespace taskgeom
