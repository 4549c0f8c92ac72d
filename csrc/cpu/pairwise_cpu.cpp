// Tiled, streaming pairwise divergence matrices on the CPU (OpenMP + SIMD): Bhattacharyya, squared
// Hellinger and symmetric KL. What differs between divergences is gathered in one traits struct per
// divergence (Traits<D> below): how samples are staged and how a tile's per-sample values are reduced.
//
// Bhattacharyya, per sample: BC = sum_c sqrt(p_c) sqrt(q_c), d = -log(BC). sqrt p is staged in float64
// and BC is accumulated with float64 FMAs: its absolute error is a few 1e-16, so 1 - BC keeps a relative
// accuracy of about 1e-6 down to d = 1e-9 per sample (the float32 Gram form of the paper's code loses it
// all there). Logarithms are taken of products: per lane, the BC of consecutive sample blocks are
// multiplied (each floored at BC_FLOOR), with the exponent split off exactly every kProdBlocks blocks so
// that the product stays a normal float64; -log of the product is reduced exactly to e log 2 + log1p(f),
// f = m - 1 computed exactly. One logarithm per lane then serves a whole staged chunk, and -log(1 - h)
// never meets the cancellation of forming 1 - h in float32.
//
// Squared Hellinger, per sample: 1 - BC from the same float64 Gram sums, added per lane in float64.
//
// Symmetric KL, per sample: sum_c (p_c - q_c) (log p_c - log q_c) with log p staged as a float32 pair
// hi + lo, so that the differences keep their relative accuracy.
//
// Layout (as in packed GEMM panels): models are staged in groups of kG; for each group, block of kW
// samples and class, the kG models' components (sqrt p as 8 float64; or p, log hi, log lo as 3 x 8
// float32) lie next to each other. A register tile of TI x kG model pairs walks two pointers linearly
// through memory, and a column group's panel stays in L1 while the row tiles stream past it.
#include "cpu/pairwise_cpu.h"

#include "cpu/gather.h"
#include "cpu/short_jobs.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

// 64-byte vector types are used below on every target; their ABI note (without AVX-512) does not apply
// to these internal functions.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace taskgeom {
namespace cpu {
namespace {

constexpr int kW = 8;  // samples per block (SIMD lanes)
constexpr int kG = 4;  // models per staged group = columns of a register tile
typedef float v8 __attribute__((vector_size(kW * sizeof(float))));
typedef int v8i __attribute__((vector_size(kW * sizeof(int))));
typedef double v8d __attribute__((vector_size(kW * sizeof(double))));
typedef long long v8l __attribute__((vector_size(kW * sizeof(long long))));

// Rows of a register tile. With 32 vector registers (AVX-512) a 4 x 4 tile of float64 Gram sums fits;
// with 16, 1 x 4 (measured choices: bench/results/pairwise_cpu.json, "kernel history").
#if defined(__AVX512F__)
constexpr int kTI = 4;
#else
constexpr int kTI = 1;
#endif

// BC of this many sample blocks are multiplied before the product's exponent is split off: 8 factors
// >= BC_FLOOR = 1e-30 times a mantissa in [1, 2) stay above 1e-240, a normal float64.
constexpr int64_t kProdBlocks = 8;
// Symmetric KL: at most this many blocks of per-sample values are added in float32 (relative error at
// most 32 * 2^-24 = 2e-6) before they join the float64 sum.
constexpr int64_t kMaxBlocks = 32;

// How a divergence's samples are staged: sqrt p as float64 (the Gram forms), or p, log p hi, log p lo as
// float32 (symmetric KL).
enum Staging : int { kSqrtF64 = 0, kLogPair = 1 };

// float32 slots per (model, class, block): sqrt p as kW float64, or p, log hi, log lo as 3 x kW float32.
constexpr int slots(Staging st) {
  return st == kLogPair ? 3 * kW : 2 * kW;
}

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float[], AlignedFree>;

Buffer make_zeroed(size_t n) {
  size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
  if (bytes == 0) bytes = 64;
  float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return Buffer(p);
}

// One sample chunk of one model set in the packed layout [group][sample block][class][model in group]
// [slots]. Padding models stay zero (their results are discarded); padding samples are staged as the
// distribution (1, 0, ..., 0) for every model, which contributes exactly 0 to either divergence.
struct Stage {
  int64_t m = 0, C = 0, ncp = 0, blocks = 0, groups = 0;
  int S = 0;  // float slots per (model, class, block)
  Buffer data;
  void allocate(int64_t m_, int64_t C_, int64_t ncp_, Staging st) {
    m = m_;
    C = C_;
    ncp = ncp_;
    S = slots(st);
    blocks = ncp / kW;
    groups = (m + kG - 1) / kG;
    data = make_zeroed((size_t)groups * blocks * C * kG * S);
  }
  int64_t class_step() const { return (int64_t)kG * S; }  // floats
  // first float of model i (block 0, class 0)
  float* model(int64_t i) const { return &data[(size_t)(i / kG) * blocks * C * class_step() + (i % kG) * S]; }
};

// The first bad input: of the earliest sample chunk, then models before others, then by model and sample
// (what a call that stages the chunks one after another would meet first).
struct FirstBad {
  int64_t chunk = INT64_MAX;
  BadInput bad;
};

void record(FirstBad& first, int64_t chunk, int which, int kind, int64_t model, int64_t sample, double value) {
#pragma omp critical(taskgeom_bad_input)
  {
    const BadInput& b = first.bad;
    bool earlier =
        chunk < first.chunk ||
        (chunk == first.chunk &&
         (which < b.which || (which == b.which && (model < b.model || (model == b.model && sample < b.sample)))));
    if (earlier) {
      first.chunk = chunk;
      first.bad = BadInput{kind, which, model, sample, value};
    }
  }
}

inline v8d vsqrt(v8d x) {
#if defined(__AVX512F__)
  return (v8d)_mm512_mask_sqrt_pd((__m512d)x, 0xff, (__m512d)x);  // (the unmasked form trips -Wmaybe-uninitialized)
#else
  for (int l = 0; l < kW; ++l) x[l] = std::sqrt(x[l]);
  return x;
#endif
}

#if defined(__AVX512F__) && defined(__F16C__)
// Square roots of contiguous float16 or float32 rows straight into the packed layout (kSqrtF64; nc a multiple
// of kW, scale = 1 / each sample's sum): the rows, still in cache from summing them, are transposed a second
// time instead of being kept as float64 between the two passes. The values are those of the other route: p
// in float64 times the scale, negatives and NaN as 0, the square root.
template <typename T>
void stage_sqrt_rows(const T* src, int64_t nc, int64_t C, const double* scale, float* x0, int64_t step) {
  static_assert(kW == 8, "one 8 x 8 transpose per sample block");
  for (int64_t n0 = 0, b = 0; n0 < nc; n0 += kW, ++b) {
    v8d sv;
    std::memcpy(&sv, scale + n0, sizeof sv);
    float* const xb = x0 + b * C * step;
    int64_t c0 = 0;
    for (; c0 + 8 <= C; c0 += 8) {
      __m256 col[8];
      transpose8x8(src, C, n0, c0, col);
      for (int k = 0; k < 8; ++k) {
        v8d pd = (v8d)_mm512_cvtps_pd(col[k]);
        pd *= sv;
        pd = pd > 0 ? pd : v8d{};
        *reinterpret_cast<v8d*>(xb + (c0 + k) * step) = vsqrt(pd);
      }
    }
    for (; c0 < C; ++c0) {
      v8d pd;
      for (int l = 0; l < kW; ++l) pd[l] = (double)load_one<T>(src + (n0 + l) * C + c0);
      pd *= sv;
      pd = pd > 0 ? pd : v8d{};
      *reinterpret_cast<v8d*>(xb + c0 * step) = vsqrt(pd);
    }
  }
}

// Stage model i's chunk of contiguous float16/float32 rows by stage_sqrt_rows: sums and negative flags in one
// read, square roots in a second. False where it does not apply (the caller stages through t).
template <typename T>
bool stage_rows_direct(const View3& v, int64_t i, int64_t n0, int64_t nc, int64_t ncp, const Stage& s, double* su,
                       double* sc, char* ng) {
  const T* rows = contiguous_rows<T>(v, i, n0);
  if (!rows || nc != ncp) return false;
  const int64_t C = v.shape[2];
  transpose_rows<T, false>(rows, nc, C, ncp, nullptr, su, ng);
  for (int64_t n = 0; n < ncp; ++n) sc[n] = su[n] > 0 ? 1.0 / su[n] : 0.0;
  stage_sqrt_rows(rows, nc, C, sc, s.model(i), s.class_step());
  return true;
}
#endif

// One thread's scratch for staging a model's chunk (allocated once per call).
struct StageScratch {
  std::vector<double> t, sums, scale;
  std::vector<char> negative;
  StageScratch(int64_t C, int64_t ncp) : t((size_t)C * ncp), sums(ncp), scale(ncp), negative(ncp) {}
};

// Stage model i's samples [n0, n0 + nc) into the packed layout, leaving each sample's class sum and negative
// flag in w.sums and w.negative: contiguous float16/float32 rows straight from the rows for the Gram forms
// (stage_rows_direct), otherwise through w.t (float64 values transposed to [class][sample]).
void stage_model(const View3& v, int64_t i, int64_t n0, int64_t nc, const Stage& s, Staging staging, StageScratch& w) {
  const int64_t C = v.shape[2], ncp = s.ncp, step = s.class_step();
  std::vector<double>& t = w.t;
  double* __restrict su = w.sums.data();
  double* __restrict sc = w.scale.data();
  char* __restrict ng = w.negative.data();
#if defined(__AVX512F__) && defined(__F16C__)
  if (staging == kSqrtF64) {
    if (v.dtype == kFloat16 && stage_rows_direct<uint16_t>(v, i, n0, nc, ncp, s, su, sc, ng)) return;
    if (v.dtype == kFloat32 && stage_rows_direct<float>(v, i, n0, nc, ncp, s, su, sc, ng)) return;
  }
#endif
  // through t: float64 values transposed to [class][sample]
  // contiguous float16 and float32 rows are summed while they are transposed (one pass over t less)
  if (!gather_chunk(v, i, n0, nc, ncp, t.data(), su, ng)) {
    for (int64_t n = 0; n < ncp; ++n) {
      su[n] = 0.0;
      ng[n] = 0;
    }
    for (int64_t c = 0; c < C; ++c) {
      const double* __restrict tc = &t[(size_t)c * ncp];
      for (int64_t n = 0; n < ncp; ++n) {
        su[n] += tc[n];
        ng[n] |= tc[n] < 0;
      }
    }
  }
  for (int64_t n = 0; n < ncp; ++n) sc[n] = su[n] > 0 ? 1.0 / su[n] : 0.0;
  float* const x0 = s.model(i);
  for (int64_t c = 0; c < C; ++c) {
    const double* __restrict tc = &t[(size_t)c * ncp];
    for (int64_t b = 0; b < s.blocks; ++b) {
      float* const dst = x0 + (b * C + c) * step;
      const double* __restrict tb = tc + b * kW;
      const double* __restrict sb = sc + b * kW;
      if (staging == kSqrtF64) {
        v8d pd, sv;
        std::memcpy(&pd, tb, sizeof pd);
        std::memcpy(&sv, sb, sizeof sv);
        pd *= sv;
        pd = pd > 0 ? pd : v8d{};  // NaN and negatives are reported by stage_checked
        *reinterpret_cast<v8d*>(dst) = vsqrt(pd);
      } else {
        float* __restrict r = dst;
        for (int l = 0; l < kW; ++l) {
          double pd = tb[l] * sb[l];
          pd = pd > 0 ? pd : 0.0;
          const double lp = std::log(std::max(pd, kProbFloor));
          const float lh = (float)lp;
          r[l] = (float)pd;
          r[kW + l] = lh;
          r[2 * kW + l] = (float)(lp - (double)lh);
        }
      }
    }
  }
}

// Stage model i's samples [n0, n0 + nc) of chunk `chunk` into the packed layout and, when `validate`, record
// the first sample whose row is not a distribution. Each stored row is renormalised in float64 (stored
// float16 rows sum to 1 only within ~1e-3, and BC(p, p) = 1 only for normalised rows). After one
// transposing copy per model chunk, every loop runs over contiguous samples and vectorises (square roots
// included). Returns false when the input is bad.
bool stage_checked(const View3& v, int64_t i, int64_t chunk, int64_t n0, int64_t nc, const Stage& s, Staging staging,
                   bool validate, double tol, FirstBad& bad, int which, StageScratch& w) {
  stage_model(v, i, n0, nc, s, staging, w);
  if (!validate) return true;
  const double* su = w.sums.data();
  const char* ng = w.negative.data();
  for (int64_t n = 0; n < nc; ++n) {
    if (!ng[n] && std::isfinite(su[n]) && std::fabs(su[n] - 1.0) <= tol) continue;
    // locate the first offending entry of this sample for the message
    const void* base = reinterpret_cast<const void*>(v.ptr);
    const int64_t row = i * v.stride[0] + (n0 + n) * v.stride[1];
    for (int64_t c = 0; c < v.shape[2]; ++c) {
      const double p = load_as_double(base, v.dtype, row + c * v.stride[2]);
      if (!std::isfinite(p) || p < 0) {
        record(bad, chunk, which, std::isfinite(p) ? kNegative : kNonFinite, i, n0 + n, p);
        return false;
      }
    }
    record(bad, chunk, which, kNotNormalised, i, n0 + n, su[n]);
    return false;
  }
  return true;
}

// Keep a value in a vector register: the compiler may neither rematerialise it from memory nor fold it
// into another instruction's memory operand. (Only with AVX-512, where a 64-byte vector is one register.)
template <typename V>
inline V pinned(V v) {
#if defined(__AVX512F__)
  asm("" : "+v"(v));
#endif
  return v;
}

template <typename V, typename T>
inline V vload(const T* p) {
  return *reinterpret_cast<const V*>(p);
}

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

// P = m 2^e with m in [1, 2): returns m, adds e to E (exact).
inline v8d split_exponent(v8d P, v8d& E) {
  const v8l bits = (v8l)P;
  E += __builtin_convertvector(((bits >> 52) & 0x7ff) - 1023, v8d);
  return (v8d)((bits & 0x000fffffffffffffLL) | 0x3ff0000000000000LL);
}

// -log(P 2^E) per lane for normal P > 0: P = m 2^e with m in [sqrt(1/2), sqrt(2)), so that f = m - 1 is
// exact in float64 (for P 2^E near 1, e + E = 0 and f carries 1 - BC without cancellation error);
// log1p(f) in float32 to about 1e-7 relative.
inline v8d neg_log(v8d P, v8d E) {
  v8d m = split_exponent(P, E);
  const v8l big = m > 1.4142135623730951;
  m = big ? m * 0.5 : m;
  E = big ? E + 1.0 : E;
  const v8 f = __builtin_convertvector(m - 1.0, v8);
  return -(E * 0.6931471805599453 + __builtin_convertvector(log1p_reduced_v(f), v8d));
}

inline v8d vmax(v8d a, v8d b) {
#if defined(__AVX512F__)
  return (v8d)_mm512_mask_max_pd((__m512d)a, 0xff, (__m512d)a, (__m512d)b);
#else
  return a > b ? a : b;
#endif
}

// Per-lane reductions of the per-sample BC of a Gram tile: the part of gram_tile that differs between
// the Gram-form divergences.
struct ProductLog {  // Bhattacharyya: -log of a product of BC (each floored at BC_FLOOR)
  v8d prod = v8d{} + 1.0, E = v8d{};
  inline void add(v8d bc) { prod *= vmax(bc, v8d{} + kBCFloor); }
  inline void renormalise() { prod = split_exponent(prod, E); }
  inline v8d finish() const { return neg_log(prod, E); }
};

struct SumOneMinus {  // squared Hellinger: sum of 1 - BC
  v8d sum = v8d{};
  inline void add(v8d bc) { sum += 1.0 - bc; }
  inline void renormalise() {}
  inline v8d finish() const { return sum; }
};

// nc classes of one tile's Gram sums, continued from s (TI x kG sums, each kW lanes) and stored back.
template <int TI>
inline void gram_steps(const double* __restrict a, const double* __restrict b, int64_t nc, v8d* __restrict s) {
  constexpr int S = kG * kW;
  v8d bc[TI][kG];
  for (int u = 0; u < TI; ++u)
    for (int t = 0; t < kG; ++t) bc[u][t] = s[u * kG + t];
  for (int64_t c = 0; c < nc; ++c, a += S, b += S) {
    // Each operand is loaded once and kept in a register (otherwise the compiler folds a reload into every
    // FMA, which made this loop load-bound on Zen 4).
    v8d av[TI];
    for (int u = 0; u < TI; ++u) av[u] = pinned(vload<v8d>(a + u * kW));
    for (int t = 0; t < kG; ++t) {
      const v8d bv = pinned(vload<v8d>(b + t * kW));
      for (int u = 0; u < TI; ++u) bc[u][t] += av[u] * bv;
    }
  }
  for (int u = 0; u < TI; ++u)
    for (int t = 0; t < kG; ++t) s[u * kG + t] = bc[u][t];
}

// Gram-form divergences on TI rows x kG columns over `nblocks` sample blocks. `a` points at the first row's
// block-0 class-0 data, `b` at the column group's; out gets the float64 sums over samples. Per lane, the BC
// of consecutive blocks go to the reducer; every kProdBlocks blocks it may renormalise (the product's
// exponent moves into E for Bhattacharyya), and one finish per lane ends the tile.
template <int TI, typename Reducer>
inline void gram_tile(const double* __restrict a, const double* __restrict b, int64_t C, int64_t nblocks,
                      double (*out)[kG]) {
  constexpr int S = kG * kW;  // float64 per class step
  Reducer red[TI][kG];
  for (int64_t blk = 0; blk < nblocks;) {
    const int64_t end = std::min(nblocks, blk + kProdBlocks);
    for (; blk < end; ++blk, a += C * S, b += C * S) {
      v8d bc[TI * kG] = {};
      gram_steps<TI>(a, b, C, bc);
      for (int u = 0; u < TI; ++u)
        for (int t = 0; t < kG; ++t) red[u][t].add(bc[u * kG + t]);
    }
    if (blk < nblocks)
      for (int u = 0; u < TI; ++u)
        for (int t = 0; t < kG; ++t) red[u][t].renormalise();
  }
  for (int u = 0; u < TI; ++u)
    for (int t = 0; t < kG; ++t) {
      const v8d d = red[u][t].finish();
      double sum = 0.0;
      for (int l = 0; l < kW; ++l) sum += d[l];
      out[u][t] = sum;
    }
}

// Symmetric KL: sum_c (p_a - p_b) ((lh_a - lh_b) + (ll_a - ll_b)), float32 partial sums.
template <int TI>
inline void kl_tile(const float* __restrict a, const float* __restrict b, int64_t C, int64_t nblocks,
                    double (*out)[kG]) {
  constexpr int K = 3, S = kG * K * kW;
  for (int u = 0; u < TI; ++u)
    for (int t = 0; t < kG; ++t) out[u][t] = 0.0;
  for (int64_t blk = 0; blk < nblocks;) {
    const int64_t end = std::min(nblocks, blk + kMaxBlocks);
    v8 acc[TI][kG] = {};
    for (; blk < end; ++blk)
      for (int64_t c = 0; c < C; ++c, a += S, b += S) {
        for (int t = 0; t < kG; ++t) {
          const float* bt = b + t * K * kW;
          const v8 bp = vload<v8>(bt), bh = vload<v8>(bt + kW), bl = vload<v8>(bt + 2 * kW);
          for (int u = 0; u < TI; ++u) {
            const float* au = a + u * K * kW;
            const v8 dl = (vload<v8>(au + kW) - bh) + (vload<v8>(au + 2 * kW) - bl);
            acc[u][t] += (vload<v8>(au) - bp) * dl;
          }
        }
      }
    for (int u = 0; u < TI; ++u)
      for (int t = 0; t < kG; ++t) {
        float sum = 0.f;
        for (int l = 0; l < kW; ++l) sum += acc[u][t][l];
        out[u][t] += sum;
      }
  }
}

// The per-divergence traits: how samples are staged and which tile computes the sums.
template <int D>
struct Traits;

template <>
struct Traits<kBhattacharyya> {
  static constexpr Staging kStaging = kSqrtF64;
  using Reducer = ProductLog;
  template <int TI>
  static void tile(const float* a, const float* b, int64_t C, int64_t nblocks, double (*out)[kG]) {
    gram_tile<TI, ProductLog>(reinterpret_cast<const double*>(a), reinterpret_cast<const double*>(b), C, nblocks, out);
  }
};

template <>
struct Traits<kHellinger> {
  static constexpr Staging kStaging = kSqrtF64;
  using Reducer = SumOneMinus;
  template <int TI>
  static void tile(const float* a, const float* b, int64_t C, int64_t nblocks, double (*out)[kG]) {
    gram_tile<TI, SumOneMinus>(reinterpret_cast<const double*>(a), reinterpret_cast<const double*>(b), C, nblocks, out);
  }
};

template <>
struct Traits<kSymmetricKL> {
  static constexpr Staging kStaging = kLogPair;
  using Reducer = void;  // not a Gram form: no wide path
  template <int TI>
  static void tile(const float* a, const float* b, int64_t C, int64_t nblocks, double (*out)[kG]) {
    kl_tile<TI>(a, b, C, nblocks, out);
  }
};

// Rows per work item: a column group's panel is reused by this many rows while it stays in L1.
constexpr int64_t kRowsPerItem = 32;
static_assert(kRowsPerItem % kG == 0 && kG % kTI == 0, "row tiles must not straddle groups");

// Work items are (column group, block of rows) pairs, so that cross matrices with few columns still use
// every thread; the largest first.
struct Item {
  int64_t g, r0, r1;
};

std::vector<Item> pair_items(int64_t ma, int64_t groups, bool symmetric) {
  std::vector<Item> items;
  for (int64_t g = groups - 1; g >= 0; --g) {
    const int64_t r_end = symmetric ? std::min(ma, (g + 1) * kG) : ma;
    for (int64_t r0 = 0; r0 < r_end; r0 += kRowsPerItem) items.push_back({g, r0, std::min(r_end, r0 + kRowsPerItem)});
  }
  return items;
}

// ---- The wide path, for many classes (Gram forms, AVX-512) ----
// With C in the hundreds a tile's operands for one sample block (C x kG x kW float64 = 256 C bytes per
// group) no longer fit in L1, and the column panel that the row tiles share falls out of it: the tile
// path became bound by L2/L3 bandwidth (25-30% of the FP64 peak at C = 1000, m = 256). The wide path
// blocks the classes as a GEMM blocks its inner dimension: an item is (up to kWideRows rows) x (up to
// kWideGroups column groups); per sample block and chunk of kKc classes, a column group's chunk
// (kG x kKc x kW float64 = 16 KB) stays in L1 while the item's row tiles pass it, and the rows' chunks
// (kWideRows / kG x 16 KB = 128 KB) stay in L2 while the column groups pass them. The Gram sums of the
// item's tiles wait in a buffer between class chunks and are added in gram_tile's order (classes
// 0 .. C - 1 per block, then the reducer per block, renormalised every kProdBlocks blocks): the results are
// bit-identical to the tile path's. Measured on a Zen 5 core (bench/results/pairwise_cpu.json): 53% of
// the FP64 peak at m = 256, C = 1000 (tile path 30%); at m = 50 staging the models costs as much as the
// Gram, which no blocking changes.
constexpr int64_t kKc = 64;         // classes per chunk
constexpr int64_t kWideRows = 32;   // rows per wide item (8 row tiles)
constexpr int64_t kWideGroups = 8;  // column groups per wide item
#if defined(__AVX512F__)
constexpr int64_t kWideMinC = 192;  // from this many classes the wide path runs (about equal at 192 and 316)
#else
constexpr int64_t kWideMinC = INT64_MAX;  // with 16 vector registers (1 x 4 tiles) it was not measured
#endif
static_assert(kWideRows % kG == 0, "wide items hold whole row groups");

struct WideItem {
  int64_t r0, r1, g0, g1;
};

std::vector<WideItem> wide_items(int64_t ma, int64_t groups, bool symmetric) {
  std::vector<WideItem> items;
  for (int64_t r0 = 0; r0 < ma; r0 += kWideRows) {
    const int64_t first = symmetric ? r0 / kG : 0;  // symmetric: column groups that reach the rows' diagonal
    for (int64_t g0 = first; g0 < groups; g0 += kWideGroups)
      items.push_back({r0, std::min(ma, r0 + kWideRows), g0, std::min(groups, g0 + kWideGroups)});
  }
  return items;
}

template <int TI, typename Reducer>
void gram_wide_item(const Stage& A, const Stage& B, const WideItem& it, bool symmetric, double* acc) {
  constexpr int S = kG * kW;                                            // float64 per class step
  const int64_t C = A.C, nblocks = A.blocks, mb = B.m, stride = C * S;  // float64 per block of a group
  const int64_t nt = (it.r1 - it.r0 + TI - 1) / TI, ng = it.g1 - it.g0, per = (int64_t)TI * kG;
  auto skip = [&](int64_t t, int64_t jg) { return symmetric && it.r0 + t * TI > (it.g0 + jg + 1) * kG - 1; };
  std::vector<v8d> sums((size_t)(nt * ng * per));
  std::vector<Reducer> red((size_t)(nt * ng * per));
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    std::fill(sums.begin(), sums.end(), v8d{});
    for (int64_t c0 = 0; c0 < C; c0 += kKc) {
      const int64_t nc = std::min(kKc, C - c0);
      for (int64_t jg = 0; jg < ng; ++jg) {
        const double* b = reinterpret_cast<const double*>(B.model((it.g0 + jg) * kG)) + blk * stride + c0 * S;
        for (int64_t t = 0; t < nt; ++t) {
          if (skip(t, jg)) continue;
          const double* a = reinterpret_cast<const double*>(A.model(it.r0 + t * TI)) + blk * stride + c0 * S;
          gram_steps<TI>(a, b, nc, &sums[(size_t)((t * ng + jg) * per)]);
        }
      }
    }
    const bool renormalise = (blk + 1) % kProdBlocks == 0 && blk + 1 < nblocks;
    for (size_t k = 0; k < sums.size(); ++k) {
      red[k].add(sums[k]);
      if (renormalise) red[k].renormalise();
    }
  }
  for (int64_t t = 0; t < nt; ++t)
    for (int64_t jg = 0; jg < ng; ++jg) {
      if (skip(t, jg)) continue;
      const int64_t i0 = it.r0 + t * TI, j0 = (it.g0 + jg) * kG;
      const int64_t in = std::min<int64_t>(TI, it.r1 - i0), jn = std::min<int64_t>(kG, mb - j0);
      for (int u = 0; u < in; ++u)
        for (int c = 0; c < jn; ++c) {
          if (symmetric && j0 + c < i0 + u) continue;
          const v8d d = red[(size_t)((t * ng + jg) * per + u * kG + c)].finish();
          double sum = 0.0;
          for (int l = 0; l < kW; ++l) sum += d[l];
          acc[(i0 + u) * mb + j0 + c] += sum;
        }
    }
}

// Item k of a chunk into acc (float64, ma x mb; the upper triangle i <= j when symmetric): a wide item when
// `witems` holds the items, else a tile item. Each pair's sum is computed by one tile whichever thread runs
// it, so results do not depend on the threads.
template <int D>
void compute_item(const Stage& A, const Stage& B, bool symmetric, const std::vector<Item>& items,
                  const std::vector<WideItem>& witems, int64_t k, double* acc) {
  if constexpr (!std::is_void_v<typename Traits<D>::Reducer>) {
    if (!witems.empty()) return gram_wide_item<kTI, typename Traits<D>::Reducer>(A, B, witems[k], symmetric, acc);
  }
  const Item item = items[k];
  const int64_t mb = B.m, C = A.C;
  const int64_t j0 = item.g * kG;
  const int64_t jn = std::min<int64_t>(kG, mb - j0);
  const float* bg = B.model(j0);
  for (int64_t i0 = item.r0; i0 < item.r1; i0 += kTI) {
    // rows past ma are zero padding of the last group; their results are discarded
    const int64_t in = std::min<int64_t>(kTI, item.r1 - i0);
    const float* ai = A.model(i0);
    double sums[kTI][kG];
    Traits<D>::template tile<kTI>(ai, bg, C, A.blocks, sums);
    for (int u = 0; u < in; ++u)
      for (int t = 0; t < jn; ++t) {
        if (symmetric && j0 + t < i0 + u) continue;
        acc[(i0 + u) * mb + j0 + t] += sums[u][t];
      }
  }
}

// The schedule of one call, shared by the threads of its parallel region without a barrier (issue 27: on a
// machine busy with other processes, a barrier per sample chunk made every thread wait for whichever one the
// scheduler had set aside, and the call spread from 0.9x to 1.6x its fair share).
//
// The samples come in chunks. Staging chunk k is `units` jobs (one model each), claimed in order across
// chunks, into a buffer of its own; the chunk is ready once all its units are staged, and its buffer is
// free again once every item has computed it. Computing is `items` lanes: item i adds chunk k's sums into
// its own part of the result after chunk k - 1's, so every pair's sum is formed in the same order whoever
// computes it, and the results do not depend on the threads. (k, i) is claimed from chunk k's cursor, in
// the items' order, once chunk k is ready; a lane is held by one thread at a time, which computes every
// claimed chunk of it in turn, and a thread that claims (k, i) while another holds lane i leaves (k, i) to
// the holder. So a thread whose partner was pre-empted goes on with the other items, and stages chunks
// ahead and computes them, while at most `ring` chunks hold buffers; it waits (EventCount) only when no
// work is left that it may take. Threads compute before they stage, and a freed buffer is the next one
// used: on a quiet machine the threads stay on the same chunk and two buffers take turns (one with one
// thread), the others are never made.
class ChunkFlow {
 public:
  // buffers 0 .. made - 1 exist already
  ChunkFlow(int64_t chunks, int64_t units, int64_t items, int64_t ring, int made)
      : chunks_(chunks),
        units_(units),
        items_(items),
        max_buffers_(ring),
        ring_(ring),
        staged_(new std::atomic<int64_t>[chunks]),
        cursor_(new std::atomic<int64_t>[chunks]),
        finished_(new std::atomic<int64_t>[chunks]),
        buffer_(new std::atomic<int>[chunks]),
        lanes_(new Lane[items]) {
    for (int64_t k = 0; k < chunks; ++k) {
      staged_[k].store(0, std::memory_order_relaxed);
      cursor_[k].store(0, std::memory_order_relaxed);
      finished_[k].store(0, std::memory_order_relaxed);
      buffer_[k].store(-1, std::memory_order_relaxed);
    }
    spare_.reserve((size_t)ring);  // (no allocation inside the parallel region)
    for (made_ = 0; made_ < made; ++made_) spare_.insert(spare_.begin(), made_);
  }

  // One thread's part, until every chunk is computed or an input was bad: make(b) makes buffer b (b < ring,
  // once each; std::bad_alloc leaves the ring at the buffers made); stage(k, unit, b) stages a unit of chunk k into
  // buffer b and returns false for bad input; compute(k, item, b) computes an item of chunk k from buffer b.
  template <typename MakeFn, typename StageFn, typename ComputeFn>
  void work(MakeFn&& make, StageFn&& stage, ComputeFn&& compute) {
    for (;;) {
      // the epoch first, then every condition: a stop or a freed chunk published before the epoch was read
      // is seen below, and one published after it ends the wait
      const uint32_t seen = events_.epoch();
      if (stopped_.load(std::memory_order_acquire)) return;
      if (compute_next(compute) || stage_next(make, stage)) continue;
      if (freed_.load(std::memory_order_acquire) >= chunks_) return;
      events_.wait(seen);
    }
  }

 private:
  struct alignas(64) Lane {
    std::atomic<int64_t> next{0};     // chunks computed
    std::atomic<int64_t> claimed{0};  // chunks claimed (the highest claimed + 1)
    std::atomic<int> held{0};
  };

  static void raise_to(std::atomic<int64_t>& x, int64_t v) {
    int64_t cur = x.load();
    while (cur < v && !x.compare_exchange_weak(cur, v)) {
    }
  }

  template <typename ComputeFn>
  bool compute_next(ComputeFn& compute) {
    for (int64_t k = open_.load(); k < chunks_ && staged_[k].load(std::memory_order_acquire) == units_;
         k = open_.load()) {
      const int64_t i = cursor_[k].fetch_add(1);
      if (i < items_) {
        run_lane(i, k, compute);
        return true;
      }
      int64_t expected = k;
      open_.compare_exchange_strong(expected, k + 1);
    }
    return false;
  }

  // Compute every claimed chunk of lane i unless another thread holds it (that thread then computes (k, i)).
  // Sequentially consistent throughout: a claimer that fails to take the lane has raised `claimed` before
  // the holder lets it go, and the holder reads `claimed` after that.
  template <typename ComputeFn>
  void run_lane(int64_t i, int64_t k, ComputeFn& compute) {
    Lane& lane = lanes_[i];
    raise_to(lane.claimed, k + 1);
    for (;;) {
      int free = 0;
      if (!lane.held.compare_exchange_strong(free, 1)) return;
      for (int64_t j; (j = lane.next.load()) < lane.claimed.load();) {
        if (stopped_.load(std::memory_order_acquire)) break;
        compute(j, i, buffer_[j].load(std::memory_order_relaxed));  // (set before the chunk was ready)
        lane.next.store(j + 1);
        if (finished_[j].fetch_add(1, std::memory_order_acq_rel) + 1 == items_) free_buffer(j);
      }
      lane.held.store(0);
      if (lane.next.load() >= lane.claimed.load() || stopped_.load()) return;
    }
  }

  void free_buffer(int64_t k) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      spare_.push_back(buffer_[k].load(std::memory_order_relaxed));
    }
    freed_.fetch_add(1, std::memory_order_acq_rel);
    events_.notify();
  }

  // The buffer of chunk k, taken before its first unit is claimed: the last freed, else a new one; -1 when
  // none is free and no more can be made.
  template <typename MakeFn>
  int buffer_for(int64_t k, MakeFn& make) {
    const int b = buffer_[k].load(std::memory_order_acquire);
    if (b >= 0) return b;
    std::lock_guard<std::mutex> lock(mu_);
    if (buffer_[k].load(std::memory_order_relaxed) < 0) {
      int fresh;
      if (!spare_.empty()) {
        fresh = spare_.back();
        spare_.pop_back();
      } else {
        if (made_ >= max_buffers_) return -1;  // (cannot happen while at most ring_ chunks hold buffers)
        try {
          make(made_);
        } catch (const std::bad_alloc&) {
          ring_.store(made_);  // wait for a buffer to be freed instead
          return -1;
        }
        fresh = made_++;
      }
      buffer_[k].store(fresh, std::memory_order_release);
    }
    return buffer_[k].load(std::memory_order_relaxed);
  }

  template <typename MakeFn, typename StageFn>
  bool stage_next(MakeFn& make, StageFn& stage) {
    int64_t u = next_unit_.load();
    for (;;) {
      const int64_t k = u / units_;
      if (stopped_.load(std::memory_order_acquire)) return false;  // (units claimed before the stop finish)
      if (k >= chunks_ || k >= freed_.load(std::memory_order_acquire) + ring_.load()) return false;
      if (buffer_for(k, make) < 0) return false;
      if (next_unit_.compare_exchange_weak(u, u + 1)) break;
    }
    const int64_t k = u / units_;
    if (!stage(k, u % units_, buffer_[k].load(std::memory_order_acquire))) {
      // later units are not staged; earlier ones were claimed already and finish, so the first bad input
      // is found as in chunk order
      stopped_.store(true, std::memory_order_release);
      events_.notify();
      return true;
    }
    if (staged_[k].fetch_add(1, std::memory_order_acq_rel) + 1 == units_) {
      if (items_ == 0) free_buffer(k);  // nothing to compute: a staged (validated) chunk is done
      events_.notify();
    }
    return true;
  }

  const int64_t chunks_, units_, items_, max_buffers_;
  std::atomic<int64_t> ring_;                         // chunks that may hold buffers at once
  std::unique_ptr<std::atomic<int64_t>[]> staged_;    // per chunk: units staged
  std::unique_ptr<std::atomic<int64_t>[]> cursor_;    // per chunk: items claimed
  std::unique_ptr<std::atomic<int64_t>[]> finished_;  // per chunk: items computed
  std::unique_ptr<std::atomic<int>[]> buffer_;        // per chunk: its buffer (-1: none yet)
  std::unique_ptr<Lane[]> lanes_;
  std::mutex mu_;           // guards spare_ and made_
  std::vector<int> spare_;  // freed buffers, the last freed last
  int made_ = 0;
  alignas(64) std::atomic<int64_t> next_unit_{0};  // chunk * units + unit
  alignas(64) std::atomic<int64_t> open_{0};       // the first chunk whose cursor may have items left
  alignas(64) std::atomic<int64_t> freed_{0};      // chunks computed by every item (their buffers freed)
  std::atomic<bool> stopped_{false};
  EventCount events_;
};

}  // namespace

BadInput pairwise(const View3& a, const View3* b, double* out, int divergence, int64_t chunk, int threads,
                  bool validate, double tol) {
  const bool symmetric = (b == nullptr);
  const View3& bv = symmetric ? a : *b;
  const int64_t ma = a.shape[0], mb = bv.shape[0], N = a.shape[1], C = a.shape[2];
  struct RestoreThreads {  // OpenMP's default thread count back on every exit, exceptions included
    int old = omp_get_max_threads();
    bool set = false;
    ~RestoreThreads() {
      if (set) omp_set_num_threads(old);
    }
  } restore;
  if (threads > 0) {
    omp_set_num_threads(threads);
    restore.set = true;
  }

  // Samples per chunk: a work item's rows (kRowsPerItem) and column panel (kG models) take about 1 MB,
  // and a tile covers 32 to 256 samples, so that its one logarithm per lane and its per-pair bookkeeping
  // are spread over many FMAs (chosen from measurements at C = 10, 100 and 1000 on a Zen 4 machine).
  const Staging staging = dispatch_divergence(divergence, [](auto d) { return Traits<decltype(d)::value>::kStaging; });
  const double bytes_per_value = staging == kLogPair ? 12 : 8;
  int64_t nc = chunk;
  if (nc <= 0) {
    const double bytes_per_sample = (double)(kRowsPerItem + kG) * C * bytes_per_value;
    nc = (int64_t)((1024.0 * 1024) / std::max(bytes_per_sample, 1.0));
    nc = std::max<int64_t>(32, std::min<int64_t>(nc, 256)) / kW * kW;
    // and the staged chunks of all models stay within 256 MB (thousands of models x 1000 classes)
    const double staged_per_sample = (double)(ma + (symmetric ? 0 : mb)) * C * bytes_per_value;
    const int64_t cap = (int64_t)((256.0 * 1024 * 1024) / std::max(staged_per_sample, 1.0)) / kW * kW;
    nc = std::max<int64_t>(kW, std::min(nc, cap));
  }
  nc = std::min(nc, N);
  const int64_t ncp = ((nc + kW - 1) / kW) * kW;

  // One parallel region per call, scheduled by a ChunkFlow: up to kRing staging buffers, as many as keep
  // the staged chunks within 256 MB (a thread whose partner is pre-empted stages and computes up to
  // ring - 1 chunks ahead before it has to wait), made when first needed.
  constexpr int64_t kRing = 8;
  const int64_t nchunks = (N + nc - 1) / nc;
  const double staged_bytes = (double)(ma + (symmetric ? 0 : mb)) * C * ncp * bytes_per_value;
  const int64_t ring =
      std::max<int64_t>(1, std::min<int64_t>({kRing, nchunks, (int64_t)(256.0 * 1024 * 1024 / staged_bytes)}));
  std::vector<Stage> A((size_t)ring), B((size_t)ring);
  auto make = [&](int k) {
    A[k].allocate(ma, C, ncp, staging);
    if (!symmetric) B[k].allocate(mb, C, ncp, staging);
  };
  make(0);  // (a failure here is the caller's std::bad_alloc; in the parallel region it only stops the ring)
  // many classes with a Gram form: the wide path (see gram_wide_item); otherwise one tile per item
  const bool wide = staging == kSqrtF64 && C >= kWideMinC;
  const int64_t col_groups = ((symmetric ? ma : mb) + kG - 1) / kG;
  const std::vector<Item> items = wide ? std::vector<Item>{} : pair_items(ma, col_groups, symmetric);
  const std::vector<WideItem> witems = wide ? wide_items(ma, col_groups, symmetric) : std::vector<WideItem>{};
  const int64_t nitems = wide ? (int64_t)witems.size() : (int64_t)items.size();
  std::vector<double> acc((size_t)ma * mb, 0.0);
  FirstBad bad;
  ChunkFlow flow(nchunks, ma + (symmetric ? 0 : mb), nitems, ring, 1);
#pragma omp parallel
  {
    StageScratch w(C, ncp);
    auto stage = [&](int64_t k, int64_t unit, int buf) {
      const int64_t n0 = k * nc, len = std::min(nc, N - n0);
      if (unit < ma) return stage_checked(a, unit, k, n0, len, A[buf], staging, validate, tol, bad, 0, w);
      return stage_checked(bv, unit - ma, k, n0, len, B[buf], staging, validate, tol, bad, 1, w);
    };
    auto compute = [&](int64_t /*k*/, int64_t item, int buf) {
      const Stage& sa = A[buf];
      const Stage& sb = symmetric ? sa : B[buf];
      dispatch_divergence(divergence, [&](auto d) {
        compute_item<decltype(d)::value>(sa, sb, symmetric, items, witems, item, acc.data());
      });
    };
    flow.work(make, stage, compute);
  }
  if (bad.bad.kind != kOk) return bad.bad;

  const double inv_n = 1.0 / (double)N;
  for (int64_t i = 0; i < ma; ++i) {
    for (int64_t j = 0; j < mb; ++j) {
      if (symmetric && j < i) continue;
      double d = acc[i * mb + j] * inv_n;
      if (!(d > 0.0) || (symmetric && i == j)) d = 0.0;  // rounding can leave -1e-16 for identical rows
      out[i * mb + j] = d;
      if (symmetric) out[j * mb + i] = d;
    }
  }
  return BadInput{};
}

}  // namespace cpu
}  // namespace taskgeom
