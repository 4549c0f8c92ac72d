// Pairwise Bhattacharyya and squared Hellinger matrices on the FP64 tensor cores (sm_80 and later).
// The arithmetic of the CPU kernel (cpu/pairwise_cpu.cpp) moved to the GPU: per sample, BC = sqrt(p) .
// sqrt(q) over the classes in float64 (WMMA m8n8k4 `double` fragments, one DMMA per 8 x 8 pairs and 4
// classes), and per pair a running product of BC kept in an accumulator fragment of the same type, so
// that the product is elementwise whatever the fragment's layout; its exponent is split off every
// tc::kSplitEvery samples and one logarithm per pair ends a block's sample range (tc_math.h, shared with
// taskgeom._C where it is tested). Squared Hellinger adds 1 - BC per sample instead.
//
// Data flow. A staging kernel writes each chunk of samples once as float64 sqrt(p / sum p), laid out
// [sample][k-step][model][4 classes] (classes padded to a multiple of 4 and models to the tile size with
// zeros), so that one k-step of a tile is a contiguous run of T x 4 doubles and a fragment is 256
// contiguous bytes (ldm = 4, conflict-free in shared memory). A block computes a T x T tile of model
// pairs over a range of samples (gridDim.z splits the samples so that the GPU fills), copying KS k-steps
// of both operands per stage into shared memory with cp.async, two stages in flight. Each warp owns WM x
// WN fragments. Blocks add their sums (divided by the total sample count) to `out` with float64 atomics;
// symmetric problems launch only tiles ti <= tj. T, WM, WN and KS are template parameters; the instances
// compiled in are listed in TG_FP64TC_CONFIGS and timed by bench/bench_fp64tc.py.
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/pairwise_fp64tc.h"
#include "cuda/utils.cuh"
#include "tc_math.h"

namespace taskgeom {
namespace cuda {
namespace {

// Instances. X(T, WM, WN, KS, SHAPE, NST, PF): T x T model pairs per block, WM x WN fragments per warp, KS
// k-steps (4 classes of one sample) per shared-memory stage. SHAPE 0: WMMA m8n8k4 `double` fragments (8 x 8
// pairs, sm_80+); SHAPE 1 and 2: `mma.sync` m16n8k4 and m16n8k8 .f64 with explicit fragment layouts (16 x 8
// pairs, sm_90 only: the larger FP64 shapes Hopper added, which cuBLAS's DGEMM uses there; m16n8k8 pads
// classes to a multiple of 8); SHAPE 3: m16n8k16 .f64 (sm_90, classes padded to 16). NST > 0 (SHAPE 1 and 2 only): the
// pipelined path, NST shared-memory stages with one barrier each and the stage's k-steps unrolled, named "..._s<NST>";
// PF bit 1 ("..._s<NST>p") also fetches the next k-step's operands into a second register set (see the kernel); PF
// bit 2 ("...e"): the lean sample epilogue (a sample's first instruction adds to zero instead of the accumulators
// being zeroed after each sample, and the floor is a compare and a select: in the SASS of nvcc 13.0 for sm_90 the
// epilogue of mma1684_t64_w2x2_k8_s3p is about 200 instructions per warp and sample, 12 per pair register, against
// 12 DMMAs at 10 classes; bench/results/fp64tc.json). LK > 0
// (SHAPE 1 and 2, "..._c<4 LK>"): the lean path for at most 4 LK classes (see the kernel), with 96 x 96 and 128 x 128
// tiles (registers, -Xptxas -v with nvcc 13.0 for sm_90: the 96 x 96 ones 202-254 with no spills, the 128 x 128 ones
// at their caps with 44-256 bytes spilled; the sweep decides). The sweep (bench/bench_fp64tc.py) times every
// instance compiled in.
// Built by default: index 0 (the default before any tuning, and the sm_80 path) and the instances the committed
// tuning table (taskgeom/_tuning.json) picks; the others only with -DTASKGEOM_FP64TC_ALL (TASKGEOM_FP64TC_ALL=1 pip
// install .), which the tuning sweep needs. Instances are found by name, so the two builds' indices may differ.
#define TG_FP64TC_TUNED(X)   \
  X(64, 4, 2, 8, 0, 0, 0, 0) \
  X(64, 2, 2, 8, 1, 3, 1, 0) \
  X(64, 2, 2, 8, 2, 3, 0, 0)

#define TG_FP64TC_MORE(X)     \
  X(64, 4, 2, 4, 0, 0, 0, 0)  \
  X(64, 2, 2, 8, 0, 0, 0, 0)  \
  X(64, 4, 4, 8, 0, 0, 0, 0)  \
  X(32, 2, 2, 16, 0, 0, 0, 0) \
  X(96, 4, 3, 8, 0, 0, 0, 0)  \
  X(64, 2, 2, 8, 1, 0, 0, 0)  \
  X(64, 2, 4, 8, 1, 0, 0, 0)  \
  X(96, 2, 3, 8, 1, 0, 0, 0)  \
  X(64, 2, 2, 8, 2, 0, 0, 0)  \
  X(96, 2, 3, 8, 2, 0, 0, 0)  \
  X(64, 2, 2, 4, 1, 4, 1, 0)  \
  X(64, 2, 4, 8, 1, 3, 1, 0)  \
  X(64, 2, 4, 8, 2, 3, 1, 0)  \
  X(96, 2, 3, 8, 1, 3, 0, 0)  \
  X(96, 2, 3, 8, 2, 3, 0, 0)  \
  X(96, 3, 3, 8, 1, 3, 1, 0)  \
  X(96, 3, 3, 8, 2, 3, 0, 0)  \
  X(64, 2, 2, 8, 3, 0, 0, 0)  \
  X(64, 2, 2, 8, 3, 3, 0, 0)  \
  X(96, 3, 3, 6, 1, 0, 0, 3)  \
  X(96, 3, 3, 12, 1, 0, 0, 3) \
  X(96, 3, 4, 6, 1, 0, 0, 3)  \
  X(128, 4, 4, 6, 1, 0, 0, 3) \
  X(128, 4, 2, 6, 1, 0, 0, 3) \
  X(96, 3, 3, 8, 2, 0, 0, 4)  \
  X(64, 2, 2, 8, 1, 3, 3, 0)  \
  X(64, 2, 2, 8, 2, 3, 2, 0)  \
  X(64, 2, 2, 4, 1, 4, 3, 0)

#ifdef TASKGEOM_FP64TC_ALL
#define TG_FP64TC_CONFIGS(X) TG_FP64TC_TUNED(X) TG_FP64TC_MORE(X)
#else
#define TG_FP64TC_CONFIGS(X) TG_FP64TC_TUNED(X)
#endif

template <int T_, int WM_, int WN_, int KS_, int SHAPE_, int NST_ = 0, int PF_ = 0, int LK_ = 0>
struct Config {
  static constexpr int T = T_, WM = WM_, WN = WN_, KS = KS_, SHAPE = SHAPE_, NST = NST_, PF = PF_, LK = LK_;
  static constexpr bool kPrefetch = (PF & 1) != 0, kLeanEpilogue = (PF & 2) != 0;
  static constexpr int kFragRows = SHAPE == 0 ? 8 : 16;                // pairs per fragment: kFragRows x 8
  static constexpr int kKSteps = SHAPE == 3 ? 4 : SHAPE == 2 ? 2 : 1;  // k-steps of 4 classes per instruction
  static constexpr int kMinArch = SHAPE == 0 ? 800 : 900;              // __CUDA_ARCH__ the instruction needs
  static constexpr int kWarpsI = T / (kFragRows * WM), kWarpsJ = T / (8 * WN);
  static constexpr int kWarps = kWarpsI * kWarpsJ;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kOperand = KS * T * 4;         // doubles of one operand per stage
  static constexpr int kStage = 2 * kOperand;         // A and B
  static constexpr int kStages = NST == 0 ? 2 : NST;  // shared-memory stages
  // the lean path keeps each pair's exponent sum in shared memory: an int per pair, lane-minor per warp
  static constexpr int kExpBytes = LK > 0 ? T * T * 4 : 0;
  static constexpr int kSmemBytes = kStages * kStage * 8 + kExpBytes;
  // classes the instance handles (0: any); the lean path holds one sample's k-steps in registers
  static constexpr int kMaxClasses = 4 * LK;
  // pipelined path: blocks per multiprocessor its register cap (__launch_bounds__) allows; two where up to 4
  // fragments per warp of up to m16n8k8 (128 registers at 256 threads) or 128 threads (255 registers) fit,
  // else one
  static constexpr int min_blocks() { return WM * WN * (4 + kKSteps) <= 24 || kThreads <= 128 ? 2 : 1; }
  static_assert(T % (kFragRows * WM) == 0 && T % (8 * WN) == 0, "warps must tile the block");
  static_assert(kThreads <= 1024, "too many warps");
  static_assert(KS % kKSteps == 0, "an instruction's k-steps must lie in one stage");
  static_assert(kWarps * 64 <= 2 * kStage, "per-warp output scratch must fit in the stage buffers");
  static_assert(NST == 0 || (SHAPE != 0 && NST >= 3), "the pipelined path: mma.sync shapes, at least 3 stages");
  static_assert(SHAPE >= 0 && SHAPE <= 3, "unknown instruction shape");
  static_assert(NST > 0 || PF == 0, "operand prefetch is a feature of the pipelined path");
  static_assert(LK == 0 || (SHAPE == 1 || SHAPE == 2) && NST == 0 && LK % kKSteps == 0 && KS >= LK,
                "the lean path: m16n8k4 or m16n8k8, two stages, whole samples per stage");
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per block");
  static std::string name() {
    const char* shape[] = {"", "mma1684_", "mma1688_", "mma16816_"};
    return std::string(shape[SHAPE]) + "t" + std::to_string(T) + "_w" + std::to_string(WM) + "x" + std::to_string(WN) +
           "_k" + std::to_string(KS) +
           (NST > 0 ? "_s" + std::to_string(NST) + (kPrefetch ? "p" : "") + (kLeanEpilogue ? "e" : "") : "") +
           (LK > 0 ? "_c" + std::to_string(kMaxClasses) : "");
  }
  // k-steps per sample: classes padded to a multiple of 4 (of 8 for m16n8k8, of 16 for m16n8k16)
  static int64_t k_steps(int64_t C) { return (C + 4 * kKSteps - 1) / (4 * kKSteps) * kKSteps; }
};

template <typename F>
void dispatch_config(int config, F&& f) {
  int k = 0;
#define TG_FP64TC_CASE(T, WM, WN, KS, SHAPE, NST, PF, LK) \
  if (config == k++) return f(Config<T, WM, WN, KS, SHAPE, NST, PF, LK>{});
  TG_FP64TC_CONFIGS(TG_FP64TC_CASE)
#undef TG_FP64TC_CASE
  throw std::invalid_argument("unknown fp64tc config " + std::to_string(config));
}

// What differs between the Gram-form divergences: the per-pair state's initial value, how a sample's
// BC joins it, and its final value.
template <int D>
struct Traits;

// max(bc, kBCFloor) for bc >= 0 as one compare and a 64-bit select (fmax is a DSETP.MAX, two selects, a
// NaN-quieting LOP3 and register moves on sm_90). It differs from tc::floored only for a NaN bc (which it
// keeps; the inputs are validated upstream and BC of finite square roots is never NaN).
__device__ __forceinline__ double floored_select(double bc) {
  double r;
  asm("{\n .reg .pred lt;\n setp.lt.f64 lt, %1, %2;\n selp.f64 %0, %2, %1, lt;\n}\n"
      : "=d"(r)
      : "d"(bc), "d"(kBCFloor));
  return r;
}

template <>
struct Traits<kBhattacharyya> {
  static constexpr double kInit = 1.0;
  template <bool kSelect = false>
  __device__ __forceinline__ static void add(double& state, int& E, double bc, bool split) {
    if constexpr (kSelect) {
      state *= floored_select(bc);
    } else {
      state *= tc::floored(bc);
    }
    if (split) state = tc::split_exponent(state, E);
  }
  __device__ __forceinline__ static double finish(double state, int E) { return tc::neg_log(state, E); }
};

template <>
struct Traits<kHellinger> {
  static constexpr double kInit = 0.0;
  template <bool kSelect = false>
  __device__ __forceinline__ static void add(double& state, int&, double bc, bool) {
    state += 1.0 - bc;
  }
  __device__ __forceinline__ static double finish(double state, int) { return state; }
};

template <>
struct Traits<kSymmetricKL> {};  // not a Gram form: the tiled kernel computes it

template <int D>
constexpr bool kGram = D == kBhattacharyya || D == kHellinger;

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
#endif

// D = A B + D on one 16 x 8 fragment (sm_90). Per lane, g = lane / 4 and t = lane % 4: c[0], c[1] are
// pairs (g, 2t), (g, 2t + 1) and c[2], c[3] the same columns in row g + 8; m16n8k4: a = {(g, t), (g + 8, t)},
// b = {(t, g)}; m16n8k8: a = {(g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4)}, b = {(t, g), (t + 4, g)};
// m16n8k16 (SHAPE 3) the same pattern over four groups of 4 classes: a[2u], a[2u + 1] = (g, t + 4u),
// (g + 8, t + 4u) and b[u] = (t + 4u, g), u < 4 (the sweep's error check and the CUDA tests confirm it).
template <int SHAPE, bool kZeroC = false>
__device__ __forceinline__ void mma_f64(double (&c)[4], const double* a, const double* b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (kZeroC) {  // D = A B: the C operand is zero (the accumulators' old values are not read)
    const double z = 0.0;
    if constexpr (SHAPE == 1) {
      asm volatile(
          "mma.sync.aligned.m16n8k4.row.col.f64.f64.f64.f64 {%0, %1, %2, %3}, {%4, %5}, {%6}, {%7, %7, %7, %7};\n"
          : "=d"(c[0]), "=d"(c[1]), "=d"(c[2]), "=d"(c[3])
          : "d"(a[0]), "d"(a[1]), "d"(b[0]), "d"(z));
    } else if constexpr (SHAPE == 2) {
      asm volatile(
          "mma.sync.aligned.m16n8k8.row.col.f64.f64.f64.f64 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
          "{%10, %10, %10, %10};\n"
          : "=d"(c[0]), "=d"(c[1]), "=d"(c[2]), "=d"(c[3])
          : "d"(a[0]), "d"(a[1]), "d"(a[2]), "d"(a[3]), "d"(b[0]), "d"(b[1]), "d"(z));
    } else {
      c[0] = c[1] = c[2] = c[3] = 0.0;
      mma_f64<SHAPE>(c, a, b);
    }
  } else if constexpr (SHAPE == 1) {
    asm volatile(
        "mma.sync.aligned.m16n8k4.row.col.f64.f64.f64.f64 {%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
        : "+d"(c[0]), "+d"(c[1]), "+d"(c[2]), "+d"(c[3])
        : "d"(a[0]), "d"(a[1]), "d"(b[0]));
  } else if constexpr (SHAPE == 2) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f64.f64.f64.f64 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+d"(c[0]), "+d"(c[1]), "+d"(c[2]), "+d"(c[3])
        : "d"(a[0]), "d"(a[1]), "d"(a[2]), "d"(a[3]), "d"(b[0]), "d"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f64.f64.f64.f64 {%0, %1, %2, %3}, {%4, %5, %6, %7, %8, %9, %10, %11}, "
        "{%12, %13, %14, %15}, {%0, %1, %2, %3};\n"
        : "+d"(c[0]), "+d"(c[1]), "+d"(c[2]), "+d"(c[3])
        : "d"(a[0]), "d"(a[1]), "d"(a[2]), "d"(a[3]), "d"(a[4]), "d"(a[5]), "d"(a[6]), "d"(a[7]), "d"(b[0]), "d"(b[1]),
          "d"(b[2]), "d"(b[3]));
  }
#else
  __trap();  // (never launched: the host checks the device, see arch_ok)
#endif
}

// X[((n - n0) * KC + kk) * mpad * 4 + model * 4 + r] = sqrt(p[model, n, 4 kk + r] / sum p), zero for
// padded classes and models. One warp per (model, sample) row, lanes over its classes: reads are
// coalesced along the row, each group of 4 lanes writes one 32-byte sector, and the 64-bit index
// arithmetic is done once per row.
__global__ void stage_fp64_kernel(View3 v, const double* inv_sum, int64_t n0, int64_t nc, int KC, int64_t mpad,
                                  double* X) {
  const int64_t m = v.shape[0], C = v.shape[2];
  const int lane = threadIdx.x % 32, width = 4 * KC;
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
  const void* base = reinterpret_cast<const void*>(v.ptr);
  for (int64_t row = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; row < mpad * nc; row += warps) {
    const int64_t model = row / nc, n = row % nc;
    const bool real = model < m;
    const double inv = real ? inv_sum[model * v.shape[1] + n0 + n] : 0.0;
    const int64_t src = model * v.stride[0] + (n0 + n) * v.stride[1];
    double* dst = X + (n * KC * mpad + model) * 4;
    for (int c = lane; c < width; c += 32) {
      double x = 0.0;
      if (real && c < C) x = sqrt(fmax(load_as_double(base, v.dtype, src + c * v.stride[2]), 0.0) * inv);
      dst[(int64_t)(c / 4) * mpad * 4 + c % 4] = x;
    }
  }
}

// The mma.sync paths' per-lane accumulators of a warp's WM x WN fragments of 16 x 8 pairs (BC, the running
// state and its exponent sum), and their end: one logarithm (Traits::finish) per pair, added to `out`;
// exponent(f, h, e) is the pair's exponent sum (a register array, or shared memory on the lean path).
struct MmaTile {
  int64_t i0, j0, ma, mb;
  int wi, wj, lane;
  bool symmetric;
  double inv_norm;
  double* out;
};

template <int WM, int WN>
__device__ __forceinline__ void init_mma(double (&bc)[WM][WN][4], double (&state)[WM][WN][4], int (&E)[WM][WN][4],
                                         double init) {
#pragma unroll
  for (int f = 0; f < WM; ++f)
#pragma unroll
    for (int h = 0; h < WN; ++h)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        bc[f][h][e] = 0.0;
        state[f][h][e] = init;
        E[f][h][e] = 0;
      }
}

template <int DIV, int WM, int WN, typename Exponent>
__device__ __forceinline__ void scatter_mma(const MmaTile& tile, const double (&state)[WM][WN][4], Exponent exponent) {
  const int g = tile.lane / 4, t = tile.lane % 4;
#pragma unroll
  for (int f = 0; f < WM; ++f)
#pragma unroll
    for (int h = 0; h < WN; ++h)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t i = tile.i0 + (tile.wi * WM + f) * 16 + g + 8 * (e / 2);
        const int64_t j = tile.j0 + (tile.wj * WN + h) * 8 + 2 * t + e % 2;
        if (i < tile.ma && j < tile.mb && (!tile.symmetric || j > i))
          atomicAdd(&tile.out[i * tile.mb + j], Traits<DIV>::finish(state[f][h][e], exponent(f, h, e)) * tile.inv_norm);
      }
}

template <typename Cfg, int DIV>
__device__ __forceinline__ void fp64tc_body(const double* __restrict__ A, const double* __restrict__ B, int64_t mpa,
                                            int64_t mpb, int64_t ma, int64_t mb, int KC, int64_t nc,
                                            int64_t samples_per_split, bool symmetric, int tiles_j, double inv_norm,
                                            double* out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  constexpr int T = Cfg::T, WM = Cfg::WM, WN = Cfg::WN, KS = Cfg::KS;
  extern __shared__ __align__(128) double smem[];

  int ti, tj;
  if (symmetric) {
    int64_t idx = blockIdx.x;
    ti = 0;
    int64_t row_len = tiles_j;
    while (idx >= row_len) {
      idx -= row_len;
      ++ti;
      --row_len;
    }
    tj = ti + (int)idx;
  } else {
    ti = blockIdx.x / tiles_j;
    tj = blockIdx.x % tiles_j;
  }
  const int64_t i0 = (int64_t)ti * T, j0 = (int64_t)tj * T;
  const int64_t s_begin = (int64_t)blockIdx.z * samples_per_split;
  const int64_t s_end = (s_begin + samples_per_split) < nc ? (s_begin + samples_per_split) : nc;
  if (s_begin >= s_end) return;  // (uniform over the block)
  const int64_t q_begin = s_begin * KC, q_end = s_end * KC;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wi = warp / Cfg::kWarpsJ, wj = warp % Cfg::kWarpsJ;
  const MmaTile tile{i0, j0, ma, mb, wi, wj, lane, symmetric, inv_norm, out};
  const double* gA = A + i0 * 4;  // k-step q of the tile's rows: gA + q * mpa * 4
  const double* gB = B + j0 * 4;

  // nks (<= KS) k-steps of both operands, as 16-byte copies; k-steps past q_end are not copied (nor read)
  auto load_stage = [&](int buf, int64_t q0, int nks) {
    double* sA = smem + buf * Cfg::kStage;
    double* sB = sA + Cfg::kOperand;
    const int n = (Cfg::LK > 0 ? nks : KS) * T * 2;  // (a constant but on the lean path: whole samples)
    for (int e = threadIdx.x; e < n; e += Cfg::kThreads) {
      const int ks = e / (T * 2), w = e % (T * 2);
      const int64_t q = q0 + ks;
      if (q < q_end) {
        cp_async16(sA + ks * T * 4 + w * 2, gA + q * mpa * 4 + w * 2);
        cp_async16(sB + ks * T * 4 + w * 2, gB + q * mpb * 4 + w * 2);
      }
    }
    cp_async_commit();
  };

  int kk = 0, since_split = 0;
  int buf = 0;
  if constexpr (Cfg::LK > 0) {
    // The lean path (C <= 4 LK, "..._c<4 LK>" instances): one sample's KC <= LK k-steps are done per
    // fragment at once, so a fragment's BC lives only across its KC instructions instead of in a
    // register set of its own, and each pair's exponent sum lives in shared memory (an int per pair,
    // touched every tc::kSplitEvery samples): 8 registers per pair of 16 x 8 (the product) instead of
    // 20, which lets a warp hold 4 x 4 fragments and a block 128 x 128 pairs, halving the operand bytes
    // per DMMA read from L2 and from shared memory against the 64 x 64 instances. A stage holds whole
    // samples (KS / KC of them).
    constexpr int KI = Cfg::kKSteps, LK = Cfg::LK;
    const int g = lane / 4, t = lane % 4;
    const int spst = KS / KC;               // samples per stage
    const int64_t kq = (int64_t)spst * KC;  // k-steps per stage
    int* Esh = reinterpret_cast<int*>(smem + Cfg::kStages * Cfg::kStage) + warp * (WM * WN * 4 * 32) + lane;
    double state[WM][WN][4];
#pragma unroll
    for (int f = 0; f < WM; ++f)
#pragma unroll
      for (int h = 0; h < WN; ++h)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          state[f][h][e] = Traits<DIV>::kInit;
          Esh[((f * WN + h) * 4 + e) * 32] = 0;  // (read back only by this lane)
        }
    load_stage(0, q_begin, (int)kq);
    for (int64_t q0 = q_begin; q0 < q_end; q0 += kq) {
      if (q0 + kq < q_end) {
        load_stage(buf ^ 1, q0 + kq, (int)kq);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      const double* sA = smem + buf * Cfg::kStage + wi * WM * 16 * 4 + g * 4 + t;
      const double* sB = smem + buf * Cfg::kStage + Cfg::kOperand + wj * WN * 8 * 4 + g * 4 + t;
      const int ns = (int)((q_end - q0) < kq ? (q_end - q0) / KC : spst);
      // one sample's k-steps, KCC of them (a compile-time count: no predicated operands)
      auto sample = [&](const double* pa, const double* pb, auto kcc) {
        constexpr int KCC = decltype(kcc)::value;
        double b[WN][KCC];
#pragma unroll
        for (int h = 0; h < WN; ++h)
#pragma unroll
          for (int u = 0; u < KCC; ++u) b[h][u] = pb[u * T * 4 + h * 8 * 4];
#pragma unroll
        for (int f = 0; f < WM; ++f) {
          double a[2 * KCC];
#pragma unroll
          for (int u = 0; u < KCC; ++u) {
            a[2 * u] = pa[u * T * 4 + f * 16 * 4];
            a[2 * u + 1] = pa[u * T * 4 + f * 16 * 4 + 8 * 4];
          }
#pragma unroll
          for (int h = 0; h < WN; ++h) {
            double bc[4] = {0.0, 0.0, 0.0, 0.0};
#pragma unroll
            for (int u = 0; u < KCC; u += KI) mma_f64<Cfg::SHAPE>(bc, &a[2 * u], &b[h][u]);
            int unused = 0;
#pragma unroll
            for (int e = 0; e < 4; ++e) Traits<DIV>::template add<true>(state[f][h][e], unused, bc[e], false);
          }
          // the next fragment row's operands are read after this one's instructions are issued: the
          // compiler would otherwise read all of them first and run out of registers
          asm volatile("" ::: "memory");
        }
      };
      for (int smp = 0; smp < ns; ++smp) {
        const double* pa = sA + smp * KC * T * 4;
        const double* pb = sB + smp * KC * T * 4;
        static_assert(LK / KI <= 4, "the lean path dispatches up to 4 instruction counts per sample");
        // KC = KI, 2 KI, ... up to LK (the host refuses C > 4 LK); anything else would leave the pair's
        // product untouched, so it stops the kernel instead
        if (KC == KI) {
          sample(pa, pb, std::integral_constant<int, KI>{});
        } else if (KC == 2 * KI && 2 * KI <= LK) {
          if constexpr (2 * KI <= LK) sample(pa, pb, std::integral_constant<int, 2 * KI>{});
        } else if (KC == 3 * KI && 3 * KI <= LK) {
          if constexpr (3 * KI <= LK) sample(pa, pb, std::integral_constant<int, 3 * KI>{});
        } else if (KC == 4 * KI && 4 * KI <= LK) {
          if constexpr (4 * KI <= LK) sample(pa, pb, std::integral_constant<int, 4 * KI>{});
        } else {
          __trap();
        }
        if constexpr (DIV == kBhattacharyya) {
          if (++since_split == tc::kSplitEvery) {
            since_split = 0;
#pragma unroll
            for (int f = 0; f < WM; ++f)
#pragma unroll
              for (int h = 0; h < WN; ++h)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                  int E = 0;
                  state[f][h][e] = tc::split_exponent(state[f][h][e], E);
                  Esh[((f * WN + h) * 4 + e) * 32] += E;
                }
          }
        }
      }
      __syncthreads();  // this stage is read: the next iteration may overwrite it
      buf ^= 1;
    }
    scatter_mma<DIV>(tile, state, [&](int f, int h, int e) { return Esh[((f * WN + h) * 4 + e) * 32]; });
  } else if constexpr (Cfg::SHAPE == 0) {
    using FragC = wmma::fragment<wmma::accumulator, 8, 8, 4, double>;
    FragC bc[WM][WN], state[WM][WN];
    int E[WM][WN][FragC::num_elements];
    const double init = Traits<DIV>::kInit;  // (fill_fragment takes a reference)
#pragma unroll
    for (int f = 0; f < WM; ++f)
#pragma unroll
      for (int g = 0; g < WN; ++g) {
        wmma::fill_fragment(bc[f][g], 0.0);
        wmma::fill_fragment(state[f][g], init);
#pragma unroll
        for (int t = 0; t < FragC::num_elements; ++t) E[f][g][t] = 0;
      }

    load_stage(0, q_begin, KS);
    for (int64_t q0 = q_begin; q0 < q_end; q0 += KS) {
      if (q0 + KS < q_end) {
        load_stage(buf ^ 1, q0 + KS, KS);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      const double* sA = smem + buf * Cfg::kStage + wi * WM * 8 * 4;
      const double* sB = smem + buf * Cfg::kStage + Cfg::kOperand + wj * WN * 8 * 4;
      const int kn = (int)((q_end - q0) < KS ? (q_end - q0) : KS);
      for (int ks = 0; ks < kn; ++ks) {
        wmma::fragment<wmma::matrix_a, 8, 8, 4, double, wmma::row_major> fa[WM];
        wmma::fragment<wmma::matrix_b, 8, 8, 4, double, wmma::col_major> fb[WN];
#pragma unroll
        for (int f = 0; f < WM; ++f) wmma::load_matrix_sync(fa[f], sA + ks * T * 4 + f * 32, 4);
#pragma unroll
        for (int g = 0; g < WN; ++g) wmma::load_matrix_sync(fb[g], sB + ks * T * 4 + g * 32, 4);
#pragma unroll
        for (int f = 0; f < WM; ++f)
#pragma unroll
          for (int g = 0; g < WN; ++g) wmma::mma_sync(bc[f][g], fa[f], fb[g], bc[f][g]);
        if (++kk == KC) {  // a sample is complete (uniform over the block)
          kk = 0;
          const bool split = ++since_split == tc::kSplitEvery;
          if (split) since_split = 0;
#pragma unroll
          for (int f = 0; f < WM; ++f)
#pragma unroll
            for (int g = 0; g < WN; ++g)
#pragma unroll
              for (int t = 0; t < FragC::num_elements; ++t) {
                Traits<DIV>::add(state[f][g].x[t], E[f][g][t], bc[f][g].x[t], split);
                bc[f][g].x[t] = 0.0;
              }
        }
      }
      __syncthreads();  // this stage is read: the next iteration may overwrite it
      buf ^= 1;
    }

    // one logarithm per pair; out through a per-warp 8 x 8 scratch (the fragment layout is opaque)
    double* scratch = smem + warp * 64;
#pragma unroll
    for (int f = 0; f < WM; ++f)
#pragma unroll
      for (int g = 0; g < WN; ++g) {
#pragma unroll
        for (int t = 0; t < FragC::num_elements; ++t) bc[f][g].x[t] = Traits<DIV>::finish(state[f][g].x[t], E[f][g][t]);
        wmma::store_matrix_sync(scratch, bc[f][g], 8, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 64; e += 32) {
          const int64_t i = i0 + (wi * WM + f) * 8 + e / 8, j = j0 + (wj * WN + g) * 8 + e % 8;
          if (i < ma && j < mb && (!symmetric || j > i)) atomicAdd(&out[i * mb + j], scratch[e] * inv_norm);
        }
        __syncwarp();
      }
  } else if constexpr (Cfg::NST == 0) {
    // mma.sync m16n8k4 / m16n8k8: the fragment layout is documented, so operands are read from shared
    // memory per lane and results go out straight from the accumulators
    constexpr int KI = Cfg::kKSteps;
    const int g = lane / 4, t = lane % 4;
    double bc[WM][WN][4], state[WM][WN][4];
    int E[WM][WN][4];
    init_mma(bc, state, E, Traits<DIV>::kInit);

    load_stage(0, q_begin, KS);
    for (int64_t q0 = q_begin; q0 < q_end; q0 += KS) {
      if (q0 + KS < q_end) {
        load_stage(buf ^ 1, q0 + KS, KS);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      const double* sA = smem + buf * Cfg::kStage + wi * WM * 16 * 4;
      const double* sB = smem + buf * Cfg::kStage + Cfg::kOperand + wj * WN * 8 * 4;
      const int kn = (int)((q_end - q0) < KS ? (q_end - q0) : KS);  // (a multiple of KI: KC is)
      for (int ks = 0; ks < kn; ks += KI) {
        double a[WM][2 * KI], b[WN][KI];
#pragma unroll
        for (int f = 0; f < WM; ++f)
#pragma unroll
          for (int u = 0; u < KI; ++u) {  // k-step ks + u holds classes 4u .. 4u + 3 of this instruction
            const double* pa = sA + (ks + u) * T * 4 + f * 16 * 4;
            a[f][2 * u] = pa[g * 4 + t];
            a[f][2 * u + 1] = pa[(g + 8) * 4 + t];
          }
#pragma unroll
        for (int h = 0; h < WN; ++h)
#pragma unroll
          for (int u = 0; u < KI; ++u) b[h][u] = sB[(ks + u) * T * 4 + h * 8 * 4 + g * 4 + t];
#pragma unroll
        for (int f = 0; f < WM; ++f)
#pragma unroll
          for (int h = 0; h < WN; ++h) mma_f64<Cfg::SHAPE>(bc[f][h], a[f], b[h]);
        kk += KI;
        if (kk == KC) {  // a sample is complete (uniform over the block)
          kk = 0;
          const bool split = ++since_split == tc::kSplitEvery;
          if (split) since_split = 0;
#pragma unroll
          for (int f = 0; f < WM; ++f)
#pragma unroll
            for (int h = 0; h < WN; ++h)
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                Traits<DIV>::add(state[f][h][e], E[f][h][e], bc[f][h][e], split);
                bc[f][h][e] = 0.0;
              }
        }
      }
      __syncthreads();  // this stage is read: the next iteration may overwrite it
      buf ^= 1;
    }

    scatter_mma<DIV>(tile, state, [&](int f, int h, int e) { return E[f][h][e]; });
  } else {
    // The pipelined mma.sync path ("_s<NST>" instances): NST shared-memory stages with NST - 1 of them in
    // flight and one barrier per stage (the buffer refilled at stage s is the one every warp finished
    // reading at stage s - 1, before that barrier), and the k-steps of a stage fully unrolled; with PF the
    // next k-step's operands are fetched from shared memory into a second register set before this
    // k-step's instructions issue, so that the shared-memory reads do not wait on the sample-end branch.
    // Same arithmetic, layouts and results as the path above.
    constexpr int KI = Cfg::kKSteps, NST = Cfg::NST, STEPS = KS / KI;
    const int g = lane / 4, t = lane % 4;
    double bc[WM][WN][4], state[WM][WN][4];
    int E[WM][WN][4];
    init_mma(bc, state, E, Traits<DIV>::kInit);

    const int64_t stages = (q_end - q_begin + KS - 1) / KS;
#pragma unroll
    for (int s = 0; s < NST - 1; ++s) {
      if (s < stages) {
        load_stage(s, q_begin + (int64_t)s * KS, KS);
      } else {
        cp_async_commit();  // an empty group keeps the wait_group count of the loop right
      }
    }
    int next = NST - 1;  // the buffer of stage s + NST - 1
    for (int64_t s = 0; s < stages; ++s) {
      cp_async_wait<NST - 2>();  // this thread's copies of stage s are in
      __syncthreads();           // everyone's are, and everyone has finished reading stage s - 1
      if (s + NST - 1 < stages) {
        load_stage(next, q_begin + (s + NST - 1) * KS, KS);
      } else {
        cp_async_commit();
      }
      next = next + 1 == NST ? 0 : next + 1;
      const int64_t q0 = q_begin + s * KS;
      const double* sA = smem + buf * Cfg::kStage + wi * WM * 16 * 4 + g * 4 + t;
      const double* sB = smem + buf * Cfg::kStage + Cfg::kOperand + wj * WN * 8 * 4 + g * 4 + t;
      const int kn = (int)((q_end - q0) < KS ? (q_end - q0) : KS);  // (a multiple of KI: KC is)
      double a[Cfg::kPrefetch ? 2 : 1][WM][2 * KI], b[Cfg::kPrefetch ? 2 : 1][WN][KI];
      // operands of the k-steps ks .. ks + KI - 1 into register set r (past kn: stale, never used)
      auto fetch = [&](int r, int ks) {
#pragma unroll
        for (int f = 0; f < WM; ++f)
#pragma unroll
          for (int u = 0; u < KI; ++u) {
            a[r][f][2 * u] = sA[(ks + u) * T * 4 + f * 16 * 4];
            a[r][f][2 * u + 1] = sA[(ks + u) * T * 4 + f * 16 * 4 + 8 * 4];
          }
#pragma unroll
        for (int h = 0; h < WN; ++h)
#pragma unroll
          for (int u = 0; u < KI; ++u) b[r][h][u] = sB[(ks + u) * T * 4 + h * 8 * 4];
      };
      if constexpr (Cfg::kPrefetch) fetch(0, 0);
#pragma unroll
      for (int step = 0; step < STEPS; ++step) {
        const int r = Cfg::kPrefetch ? step & 1 : 0;
        if constexpr (Cfg::kPrefetch) {
          if (step + 1 < STEPS) fetch(r ^ 1, (step + 1) * KI);
        }
        if (step * KI < kn) {  // (uniform over the block)
          if constexpr (!Cfg::kPrefetch) fetch(0, step * KI);
          if (Cfg::kLeanEpilogue && kk == 0) {  // a sample's first instruction: BC = A B + 0 (uniform branch)
#pragma unroll
            for (int f = 0; f < WM; ++f)
#pragma unroll
              for (int h = 0; h < WN; ++h) mma_f64<Cfg::SHAPE, true>(bc[f][h], a[r][f], b[r][h]);
          } else {
#pragma unroll
            for (int f = 0; f < WM; ++f)
#pragma unroll
              for (int h = 0; h < WN; ++h) mma_f64<Cfg::SHAPE>(bc[f][h], a[r][f], b[r][h]);
          }
          kk += KI;
          if (kk == KC) {  // a sample is complete
            kk = 0;
            const bool split = ++since_split == tc::kSplitEvery;
            if (split) since_split = 0;
#pragma unroll
            for (int f = 0; f < WM; ++f)
#pragma unroll
              for (int h = 0; h < WN; ++h)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                  if constexpr (Cfg::kLeanEpilogue) {
                    Traits<DIV>::template add<true>(state[f][h][e], E[f][h][e], bc[f][h][e], split);
                  } else {
                    Traits<DIV>::add(state[f][h][e], E[f][h][e], bc[f][h][e], split);
                    bc[f][h][e] = 0.0;
                  }
                }
          }
        }
      }
      buf = buf + 1 == NST ? 0 : buf + 1;
    }

    scatter_mma<DIV>(tile, state, [&](int f, int h, int e) { return E[f][h][e]; });
  }
#endif
}

#define TG_FP64TC_PARAMS                                                                                        \
  const double *__restrict__ A, const double *__restrict__ B, int64_t mpa, int64_t mpb, int64_t ma, int64_t mb, \
      int KC, int64_t nc, int64_t samples_per_split, bool symmetric, int tiles_j, double inv_norm, double *out
#define TG_FP64TC_ARGS A, B, mpa, mpb, ma, mb, KC, nc, samples_per_split, symmetric, tiles_j, inv_norm, out

// The first instances' kernel, with the launch bounds (and so the register allocation) they were measured with.
template <typename Cfg, int DIV>
__global__ void __launch_bounds__(Cfg::kThreads) fp64tc_kernel(TG_FP64TC_PARAMS) {
  fp64tc_body<Cfg, DIV>(TG_FP64TC_ARGS);
}

// The pipelined instances' kernel, capped at the registers that keep Cfg::min_blocks() blocks resident.
template <typename Cfg, int DIV>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::min_blocks()) fp64tc_kernel_pipelined(TG_FP64TC_PARAMS) {
  fp64tc_body<Cfg, DIV>(TG_FP64TC_ARGS);
}

// The lean instances' kernel: one block per multiprocessor, so each thread may have all the registers that
// leaves (255 at 256 threads, 128 at 512).
template <typename Cfg, int DIV>
__global__ void __launch_bounds__(Cfg::kThreads, 1) fp64tc_kernel_lean(TG_FP64TC_PARAMS) {
  fp64tc_body<Cfg, DIV>(TG_FP64TC_ARGS);
}
#undef TG_FP64TC_PARAMS
#undef TG_FP64TC_ARGS

template <typename Cfg, int DIV>
constexpr auto kernel_of() {
  if constexpr (Cfg::LK > 0) {
    return fp64tc_kernel_lean<Cfg, DIV>;
  } else if constexpr (Cfg::NST == 0) {
    return fp64tc_kernel<Cfg, DIV>;
  } else {
    return fp64tc_kernel_pipelined<Cfg, DIV>;
  }
}

__global__ void mirror_fp64tc_kernel(double* out, int64_t m) {
  const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= m * m) return;
  const int64_t i = idx / m, j = idx % m;
  if (i > j) out[idx] = out[j * m + i];
}

int64_t round_up(int64_t x, int64_t to) {
  return (x + to - 1) / to * to;
}

// Resident blocks per multiprocessor (also raises the kernel's dynamic shared-memory limit, once).
template <typename Cfg, int DIV>
int blocks_per_sm() {
  static int cached = -1;
  if (cached < 0) {
    TG_CUDA_CHECK(
        cudaFuncSetAttribute(kernel_of<Cfg, DIV>(), cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
    int bps = 1;
    TG_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&bps, kernel_of<Cfg, DIV>(), Cfg::kThreads, Cfg::kSmemBytes));
    cached = bps > 0 ? bps : 1;
  }
  return cached;
}

void stage(const View3& v, const double* inv_sum, int64_t n0, int64_t len, int KC, int64_t mpad, double* X, int sms,
           cudaStream_t stream) {
  const int64_t rows = mpad * len;  // one warp each, 8 per block
  const unsigned blocks = (unsigned)std::min<int64_t>((rows + 7) / 8, (int64_t)sms * 32);
  stage_fp64_kernel<<<blocks, 256, 0, stream>>>(v, inv_sum, n0, len, KC, mpad, X);
  TG_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

std::vector<std::string> fp64tc_configs() {
  std::vector<std::string> names;
#define TG_FP64TC_NAME(T, WM, WN, KS, SHAPE, NST, PF, LK) \
  names.push_back(Config<T, WM, WN, KS, SHAPE, NST, PF, LK>::name());
  TG_FP64TC_CONFIGS(TG_FP64TC_NAME)
#undef TG_FP64TC_NAME
  return names;
}

std::vector<int> fp64tc_config_archs() {
  std::vector<int> archs;
#define TG_FP64TC_ARCH(T, WM, WN, KS, SHAPE, NST, PF, LK) \
  archs.push_back(Config<T, WM, WN, KS, SHAPE, NST, PF, LK>::kMinArch / 10);
  TG_FP64TC_CONFIGS(TG_FP64TC_ARCH)
#undef TG_FP64TC_ARCH
  return archs;
}

std::vector<int> fp64tc_config_max_classes() {
  std::vector<int> classes;
#define TG_FP64TC_CLASSES(T, WM, WN, KS, SHAPE, NST, PF, LK) \
  classes.push_back(Config<T, WM, WN, KS, SHAPE, NST, PF, LK>::kMaxClasses);
  TG_FP64TC_CONFIGS(TG_FP64TC_CLASSES)
#undef TG_FP64TC_CLASSES
  return classes;
}

int64_t fp64tc_scratch_doubles(int64_t ma, int64_t mb, bool cross, int64_t C, int config, int64_t samples) {
  int64_t per_sample = 0;
  dispatch_config(config, [&](auto cfg) {
    using Cfg = decltype(cfg);
    per_sample = Cfg::k_steps(C) * 4 * (round_up(ma, Cfg::T) + (cross ? round_up(mb, Cfg::T) : 0));
  });
  return per_sample * samples;
}

bool fp64tc_available() {
  int dev = 0, major = 0;
  TG_CUDA_CHECK(cudaGetDevice(&dev));
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  if (major < 8) return false;
  cudaFuncAttributes attr;
  if (cudaFuncGetAttributes(&attr, fp64tc_kernel<Config<64, 4, 2, 8, 0>, kBhattacharyya>) != cudaSuccess) {
    (void)cudaGetLastError();  // no binary for this device
    return false;
  }
  return attr.ptxVersion >= 80;  // compiled with __CUDA_ARCH__ >= 800, so the kernel body is there
}

void pairwise_fp64tc(const View3& a, const double* a_inv, const View3* b, const double* b_inv, double* out,
                     int divergence, int64_t norm, bool mirror, double* scratch, int64_t scratch_doubles, int config,
                     std::uintptr_t stream_ptr) {
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_ptr);
  const bool symmetric = b == nullptr;
  const View3& bv = symmetric ? a : *b;
  const int64_t ma = a.shape[0], mb = bv.shape[0], N = a.shape[1], C = a.shape[2];
  int dev = 0, sms = 132, major = 0, minor = 0;
  TG_CUDA_CHECK(cudaGetDevice(&dev));
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  const double inv_norm = 1.0 / (double)(norm > 0 ? norm : N);
  dispatch_divergence(divergence, [&](auto d) {
    constexpr int D = decltype(d)::value;
    if constexpr (!kGram<D>) {
      throw std::invalid_argument("cuda_method='fp64tc' computes bhattacharyya and hellinger only");
    } else {
      dispatch_config(config, [&](auto cfg) {
        using Cfg = decltype(cfg);
        if (major * 100 + minor * 10 < Cfg::kMinArch)
          throw std::invalid_argument("fp64tc config " + Cfg::name() + " needs compute capability " +
                                      std::to_string(Cfg::kMinArch / 100) + ".0 or later");
        if (Cfg::kMaxClasses > 0 && C > Cfg::kMaxClasses)
          throw std::invalid_argument("fp64tc config " + Cfg::name() + " handles at most " +
                                      std::to_string(Cfg::kMaxClasses) + " classes, got " + std::to_string(C));
        const int KC = (int)Cfg::k_steps(C);
        const int64_t mpa = round_up(ma, Cfg::T), mpb = symmetric ? mpa : round_up(mb, Cfg::T);
        const int64_t per_sample = (int64_t)KC * 4 * (mpa + (symmetric ? 0 : mpb));
        const int64_t nc = std::min<int64_t>(N, scratch_doubles / per_sample);
        if (nc < 1) throw std::invalid_argument("scratch buffer too small for one sample");
        double* As = scratch;
        double* Bs = symmetric ? As : As + nc * KC * 4 * mpa;
        const int tiles_i = (int)(mpa / Cfg::T), tiles_j = (int)(mpb / Cfg::T);
        const int64_t tiles = symmetric ? (int64_t)tiles_i * (tiles_i + 1) / 2 : (int64_t)tiles_i * tiles_j;
        // about 8 waves of resident blocks, so that the last partial wave costs little
        const int64_t want = (int64_t)sms * blocks_per_sm<Cfg, D>() * 8;
        for (int64_t n0 = 0; n0 < N; n0 += nc) {
          const int64_t len = std::min(nc, N - n0);
          stage(a, a_inv, n0, len, KC, mpa, As, sms, stream);
          if (!symmetric) stage(bv, b_inv, n0, len, KC, mpb, Bs, sms, stream);
          int sp = (int)std::max<int64_t>(1, std::min<int64_t>((want + tiles - 1) / tiles, len));
          sp = (int)std::min<int64_t>(sp, 65535);
          const int64_t per_split = (len + sp - 1) / sp;
          sp = (int)((len + per_split - 1) / per_split);  // no empty splits
          dim3 grid((unsigned)tiles, 1, (unsigned)sp);
          const auto kernel = kernel_of<Cfg, D>();
          kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(As, Bs, mpa, mpb, ma, mb, KC, len, per_split,
                                                                   symmetric, tiles_j, inv_norm, out);
          TG_CUDA_CHECK(cudaGetLastError());
        }
      });
    }
  });
  if (symmetric && mirror) {
    const int64_t total = ma * ma;
    mirror_fp64tc_kernel<<<(unsigned)((total + 255) / 256), 256, 0, stream>>>(out, ma);
    TG_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace cuda
}  // namespace taskgeom
