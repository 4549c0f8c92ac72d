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
constexpr int kTI = 1;  // models of a per register tile (2 measured no faster)
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

// Stage samples [n0, n0 + nc) of every model as [model][class][sample], padding to ncp with zeros.
// Each stored row is renormalised in float64 (stored float16 rows sum to 1 only within ~1e-3, and the
// -log(1 - h) and -log(BC) forms agree only for normalised rows). Loops run class-outer so that writes
// are contiguous.
void stage_chunk(const View3& v, int64_t n0, int64_t nc, Stage& s, int div, bool validate, double tol,
                 BadInput& bad, int which) {
  const int64_t m = v.shape[0], C = v.shape[2], ncp = s.ncp;
  const void* base = reinterpret_cast<const void*>(v.ptr);
#pragma omp parallel
  {
    std::vector<double> sums(ncp), scale(ncp);
    std::vector<char> negative(ncp);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < m; ++i) {
      std::fill(sums.begin(), sums.end(), 0.0);
      std::fill(negative.begin(), negative.end(), 0);
      for (int64_t c = 0; c < C; ++c) {
        const int64_t off = i * v.stride[0] + c * v.stride[2] + n0 * v.stride[1];
        for (int64_t n = 0; n < nc; ++n) {
          const double pd = load_as_double(base, v.dtype, off + n * v.stride[1]);
          sums[n] += pd;
          negative[n] |= pd < 0;
        }
      }
      for (int64_t n = 0; n < nc; ++n) scale[n] = sums[n] > 0 ? 1.0 / sums[n] : 0.0;
      for (int64_t c = 0; c < C; ++c) {
        float* xs = &s.x[((size_t)i * C + c) * ncp];
        float* ys = &s.y[((size_t)i * C + c) * ncp];
        float* zs = div == kSymmetricKL ? &s.z[((size_t)i * C + c) * ncp] : nullptr;
        const int64_t off = i * v.stride[0] + c * v.stride[2] + n0 * v.stride[1];
        for (int64_t n = 0; n < nc; ++n) {
          double pd = load_as_double(base, v.dtype, off + n * v.stride[1]) * scale[n];
          pd = pd > 0 ? pd : 0.0;  // NaN and negatives are reported below
          if (div == kBhattacharyya) {
            const double r = std::sqrt(pd);
            const float hi = (float)r;
            xs[n] = hi;
            ys[n] = (float)(r - (double)hi);
          } else {
            const double lp = std::log(std::max(pd, kProbFloor));
            const float lh = (float)lp;
            xs[n] = (float)pd;
            ys[n] = lh;
            zs[n] = (float)(lp - (double)lh);
          }
        }
        for (int64_t n = nc; n < ncp; ++n) {
          xs[n] = 0.f;
          ys[n] = 0.f;
          if (zs) zs[n] = 0.f;
        }
      }
      if (!validate) continue;
      for (int64_t n = 0; n < nc; ++n) {
        if (!negative[n] && std::isfinite(sums[n]) && std::fabs(sums[n] - 1.0) <= tol) continue;
        // locate the first offending entry of this sample for the message
        const int64_t row = i * v.stride[0] + (n0 + n) * v.stride[1];
        bool found = false;
        for (int64_t c = 0; c < C && !found; ++c) {
          const double p = load_as_double(base, v.dtype, row + c * v.stride[2]);
          if (!std::isfinite(p)) { record(bad, which, kNonFinite, i, n0 + n, p); found = true; }
          else if (p < 0) { record(bad, which, kNegative, i, n0 + n, p); found = true; }
        }
        if (!found) record(bad, which, kNotNormalised, i, n0 + n, sums[n]);
        break;
      }
    }
  }
}

inline v8 vload(const float* p) { return *reinterpret_cast<const v8*>(p); }

typedef double v8d __attribute__((vector_size(kW * sizeof(double))));
typedef int v8i __attribute__((vector_size(kW * sizeof(int))));

// Division-free per-sample logarithms for the finishing step (vectorised over samples).

// log(1 + f) = f - f^2/2 + f^3 P(f) for f in [sqrt(1/2) - 1, sqrt(2) - 1], P a degree-7 least-squares fit
// for relative error (fitted for taskgeom; max relative error 7e-9 in exact arithmetic on that interval).
inline v8 log1p_reduced_v(v8 f) {
  v8 p = f * -7.362867871e-02f + 1.262032749e-01f;
  p = p * f - 1.320210421e-01f;
  p = p * f + 1.422711404e-01f;
  p = p * f - 1.662136991e-01f;
  p = p * f + 1.999982657e-01f;
  p = p * f - 2.500085194e-01f;
  p = p * f + 3.333335405e-01f;
  const v8 f2 = f * f;
  return f - 0.5f * f2 + f2 * f * p;
}

// Per-sample distances of one block of kW samples with one polynomial evaluation for every lane:
// where h = 1 - BC <= 1 - sqrt(1/2), -log(1 - h) = -log1p(f) with f = -h exact (no cancellation for
// nearby models); elsewhere BC = s (accurate when small) is reduced to m 2^e, m in [sqrt(1/2), sqrt(2)),
// and -log(BC) = -(e log 2 + log1p(m - 1)).
inline v8d finish_bhattacharyya(v8 h2, v8 s) {
  const v8 h = h2 * 0.5f;
  const v8i near = h <= 0.29289321f;
  const v8 floor = v8{} + (float)kBCFloor;
  const v8 x = s > floor ? s : floor;
  const v8i bits = (v8i)x;
  v8i e = ((bits >> 23) & 0xff) - 127;
  v8 m = (v8)((bits & 0x007fffff) | 0x3f800000);
  const v8i big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = e - big;  // big is -1 where true
  const v8 f = near ? -h : m - 1.0f;
  const v8 ef = near ? v8{} : __builtin_convertvector(e, v8);
  return __builtin_convertvector(-(ef * 0.69314718056f + log1p_reduced_v(f)), v8d);
}

// Bhattacharyya on a kTI x kTJ register tile of pairs (rows ii[], columns jj[]), one block of kW samples.
template <int TI>
inline void bhattacharyya_tile(const Stage& A, const Stage& B, const int64_t* ii, const int64_t* jj, int64_t nb,
                               v8d (*sums)[kTJ]) {
  const int64_t C = A.C, ncp = A.ncp;
  v8 h[TI][kTJ] = {}, s[TI][kTJ] = {};
  const float* ax[TI];
  const float* ay[TI];
  const float* bx[kTJ];
  const float* by[kTJ];
  for (int u = 0; u < TI; ++u) {
    ax[u] = &A.x[(size_t)ii[u] * C * ncp + nb];
    ay[u] = &A.y[(size_t)ii[u] * C * ncp + nb];
  }
  for (int t = 0; t < kTJ; ++t) {
    bx[t] = &B.x[(size_t)jj[t] * C * ncp + nb];
    by[t] = &B.y[(size_t)jj[t] * C * ncp + nb];
  }
  for (int64_t c = 0; c < C; ++c) {
    const size_t o = (size_t)c * ncp;
    v8 ah[TI], al[TI];
    for (int u = 0; u < TI; ++u) { ah[u] = vload(ax[u] + o); al[u] = vload(ay[u] + o); }
    for (int t = 0; t < kTJ; ++t) {
      const v8 bh = vload(bx[t] + o), bl = vload(by[t] + o);
      for (int u = 0; u < TI; ++u) {
        const v8 d = (ah[u] - bh) + (al[u] - bl);
        h[u][t] += d * d;
        s[u][t] += ah[u] * bh;
      }
    }
  }
  for (int u = 0; u < TI; ++u)
    for (int t = 0; t < kTJ; ++t) sums[u][t] += finish_bhattacharyya(h[u][t], s[u][t]);
}

void compute_pairs(const Stage& A, const Stage& B, bool symmetric, int div, double* acc) {
  const int64_t ma = A.m, mb = B.m, C = A.C, ncp = A.ncp;
  const int64_t row_tiles = (ma + kTI - 1) / kTI;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t rt = 0; rt < row_tiles; ++rt) {
    const int64_t i0 = rt * kTI;
    const int64_t in = std::min<int64_t>(kTI, ma - i0);
    int64_t ii[kTI];
    for (int u = 0; u < kTI; ++u) ii[u] = i0 + std::min<int64_t>(u, in - 1);
    const int64_t j_begin = symmetric ? (i0 / kTJ) * kTJ : 0;
    for (int64_t j0 = j_begin; j0 < mb; j0 += kTJ) {
      const int64_t jn = std::min<int64_t>(kTJ, mb - j0);
      int64_t jj[kTJ];
      for (int t = 0; t < kTJ; ++t) jj[t] = j0 + std::min<int64_t>(t, jn - 1);
      v8d sums[kTI][kTJ] = {};
      for (int64_t nb = 0; nb < ncp; nb += kW) {
        if (div == kBhattacharyya) {
          bhattacharyya_tile<kTI>(A, B, ii, jj, nb, sums);
        } else {
          for (int u = 0; u < in; ++u) {
            v8 k[kTJ] = {};
            for (int64_t c = 0; c < C; ++c) {
              const size_t ao = ((size_t)ii[u] * C + c) * ncp + nb;
              const v8 ap = vload(&A.x[ao]), ah = vload(&A.y[ao]), al = vload(&A.z[ao]);
              for (int t = 0; t < kTJ; ++t) {
                const size_t bo = ((size_t)jj[t] * C + c) * ncp + nb;
                const v8 dl = (ah - vload(&B.y[bo])) + (al - vload(&B.z[bo]));
                k[t] += (ap - vload(&B.x[bo])) * dl;
              }
            }
            for (int t = 0; t < kTJ; ++t) sums[u][t] += __builtin_convertvector(k[t], v8d);
          }
        }
      }
      for (int u = 0; u < in; ++u)
        for (int t = 0; t < jn; ++t) {
          if (symmetric && j0 + t < i0 + u) continue;
          double tot = 0.0;
          for (int l = 0; l < kW; ++l) tot += sums[u][t][l];
          acc[(i0 + u) * mb + j0 + t] += tot;
        }
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
    nc = (int64_t)((512.0 * 1024) / std::max(bytes_per_sample, 1.0));  // L2-resident chunk (measured)
    nc = std::max<int64_t>(kW, std::min<int64_t>(nc, 256));
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
