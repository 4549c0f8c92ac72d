// Tiled pairwise divergence matrices on the GPU: Bhattacharyya, squared Hellinger and symmetric KL.
// What differs between divergences is gathered in one traits struct per divergence (Traits<D>).
//
// Samples are processed in chunks. For each chunk a staging kernel writes every model's row-normalised
// entries once, k-major and model-contiguous ([sample * C + class][model]), as float32 pairs: sqrt(p)
// split into hi + lo (computed in float64) for Bhattacharyya, or p and log p = hi + lo for symmetric KL.
// The tile kernel then computes a 64 x 64 tile of model pairs per block (a 4 x 4 register micro-tile
// per thread), staging 32 k-entries at a time through shared memory with coalesced float4 copies, and
// per sample h = 1/2 sum_c ((hi_a - hi_b) + (lo_a - lo_b))^2 with no cancellation. At each sample
// boundary -log(1 - h) (series, h <= 1/8) or -log(BC) is added to a float32 partial sum that is flushed
// every 16 samples into float64 accumulators kept in shared memory. Samples are
// split among blocks (gridDim.z) whose partial sums are added to `out` with float64 atomics; symmetric
// problems launch only tiles with ti <= tj.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "cuda/pairwise_cuda.h"
#include "cuda/utils.cuh"

namespace taskgeom {
namespace cuda {
namespace {

constexpr int kTile = 64;  // models per tile side
constexpr int kMicro = 4;  // models per thread side
constexpr int kThreads = 256;
constexpr int kK = 32;      // staged k-entries per step
constexpr int kFlush = 16;  // samples summed in float32 before adding to the float64 accumulators

// -log(1 - h) for h <= 1/8 by its series (8 terms, relative error below 1e-8), division-free.
__device__ __forceinline__ float neg_log1m_small(float h) {
  float p = fmaf(h, 1.0f / 8.0f, 1.0f / 7.0f);
  p = fmaf(p, h, 1.0f / 6.0f);
  p = fmaf(p, h, 1.0f / 5.0f);
  p = fmaf(p, h, 1.0f / 4.0f);
  p = fmaf(p, h, 1.0f / 3.0f);
  p = fmaf(p, h, 1.0f / 2.0f);
  p = fmaf(p, h, 1.0f);
  return p * h;
}

// The per-divergence traits. kArrays: staged float32 arrays per entry (2: sqrt p as hi + lo, from which
// the tile accumulates h = sum_c (sqrt p - sqrt q)^2 and BC = sum_c sqrt(p q); 3: p and log p as hi + lo,
// from which it accumulates sum_c (p - q)(log p - log q)). sample_value: the per-sample divergence from
// those sums.
template <int D>
struct Traits;

template <>
struct Traits<kBhattacharyya> {
  static constexpr int kArrays = 2;
  // series where h/2 <= 1/8 (no cancellation); -log BC elsewhere (|log BC| >= 0.13, so the absolute error
  // 4e-7 of __logf is below 3e-6 relative)
  __device__ __forceinline__ static float sample_value(float h, float bc) {
    const float hh = 0.5f * h;
    const float far = -__logf(fmaxf(bc, (float)kBCFloor));
    return hh <= 0.125f ? neg_log1m_small(hh) : far;
  }
};

template <>
struct Traits<kHellinger> {
  static constexpr int kArrays = 2;
  __device__ __forceinline__ static float sample_value(float h, float) { return 0.5f * h; }  // 1 - BC
};

template <>
struct Traits<kSymmetricKL> {
  static constexpr int kArrays = 3;
  __device__ __forceinline__ static float sample_value(float h, float) { return h; }
};

template <int DIV>
constexpr int tile_smem_bytes() {
  return Traits<DIV>::kArrays * 2 * kK * kTile * (int)sizeof(float) + kMicro * kMicro * kThreads * (int)sizeof(double);
}

int staged_arrays(int divergence) {
  return dispatch_divergence(divergence, [](auto d) { return Traits<decltype(d)::value>::kArrays; });
}

// X/Y/Z[k * mpad + model] for k = (n - n0) * C + c; zero for padded models. log_pair: stage p and log p
// (hi + lo) instead of sqrt p (hi + lo).
__global__ void stage_kernel(View3 v, const double* inv_sum, int64_t n0, int64_t nc, int64_t mpad, bool log_pair,
                             float* X, float* Y, float* Z) {
  const int64_t C = v.shape[2], m = v.shape[0];
  const int64_t total = nc * C * mpad;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t model = idx % mpad, k = idx / mpad;
    const int64_t n = n0 + k / C, c = k % C;
    float x = 0.f, y = 0.f, z = 0.f;
    if (model < m) {
      double p = load_as_double(reinterpret_cast<const void*>(v.ptr), v.dtype,
                                model * v.stride[0] + n * v.stride[1] + c * v.stride[2]);
      p = fmax(p, 0.0) * inv_sum[model * v.shape[1] + n];
      if (!log_pair) {
        const double r = sqrt(p);
        x = (float)r;
        y = (float)(r - (double)x);
      } else {
        const double lp = log(fmax(p, kProbFloor));
        x = (float)p;
        y = (float)lp;
        z = (float)(lp - (double)y);
      }
    }
    X[idx] = x;
    Y[idx] = y;
    if (log_pair) Z[idx] = z;
  }
}

struct Staged {
  const float *x, *y, *z;
  int64_t mpad;
};

template <int DIV>
__global__ void __launch_bounds__(kThreads, 2)
    tile_kernel(Staged A, Staged B, int64_t ma, int64_t mb, int C, int64_t nc, int64_t samples_per_split,
                bool symmetric, int tiles_j, double inv_norm, double* out) {
  constexpr int NA = Traits<DIV>::kArrays;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float (*As)[kK][kTile] = reinterpret_cast<float (*)[kK][kTile]>(smem_raw);
  float (*Bs)[kK][kTile] = reinterpret_cast<float (*)[kK][kTile]>(smem_raw + NA * kK * kTile * sizeof(float));
  // float64 accumulators, [pair][thread] so that a warp's accesses are conflict-free
  double* acc = reinterpret_cast<double*>(smem_raw + 2 * NA * kK * kTile * sizeof(float));

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
  const int64_t i0 = (int64_t)ti * kTile, j0 = (int64_t)tj * kTile;
  const int64_t s_begin = (int64_t)blockIdx.z * samples_per_split;
  const int64_t s_end = (s_begin + samples_per_split) < nc ? (s_begin + samples_per_split) : nc;
  if (s_begin >= s_end) return;
  const int64_t k_begin = s_begin * C, k_end = s_end * C;

  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float h[kMicro][kMicro], s[kMicro][kMicro], part[kMicro][kMicro];
#pragma unroll
  for (int u = 0; u < kMicro; ++u)
#pragma unroll
    for (int w = 0; w < kMicro; ++w) {
      h[u][w] = 0.f;
      s[u][w] = 0.f;
      part[u][w] = 0.f;
      acc[(u * kMicro + w) * kThreads + threadIdx.x] = 0.0;
    }

  const float* srcA[3] = {A.x, A.y, A.z};
  const float* srcB[3] = {B.x, B.y, B.z};
  int cls = 0, done = 0;
  for (int64_t kk = k_begin; kk < k_end; kk += kK) {
    // stage kK x 64 floats per array: 512 float4, two per thread
#pragma unroll
    for (int q = 0; q < NA; ++q) {
#pragma unroll
      for (int rep = 0; rep < 2; ++rep) {
        const int e = threadIdx.x + rep * kThreads;  // float4 index in the tile
        const int r = e / (kTile / 4), col = (e % (kTile / 4)) * 4;
        const int64_t k = kk + r;
        float4 va = make_float4(0.f, 0.f, 0.f, 0.f), vb = va;
        if (k < k_end) {
          va = *reinterpret_cast<const float4*>(srcA[q] + k * A.mpad + i0 + col);
          vb = *reinterpret_cast<const float4*>(srcB[q] + k * B.mpad + j0 + col);
        }
        *reinterpret_cast<float4*>(&As[q][r][col]) = va;
        *reinterpret_cast<float4*>(&Bs[q][r][col]) = vb;
      }
    }
    __syncthreads();
    const int kn = (int)((k_end - kk) < kK ? (k_end - kk) : kK);
    for (int k = 0; k < kn; ++k) {
      const float4 a0 = *reinterpret_cast<const float4*>(&As[0][k][ty * kMicro]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[1][k][ty * kMicro]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[0][k][tx * kMicro]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[1][k][tx * kMicro]);
      const float ax[4] = {a0.x, a0.y, a0.z, a0.w}, ay[4] = {a1.x, a1.y, a1.z, a1.w};
      const float bx[4] = {b0.x, b0.y, b0.z, b0.w}, by[4] = {b1.x, b1.y, b1.z, b1.w};
      if constexpr (NA == 2) {
#pragma unroll
        for (int u = 0; u < kMicro; ++u)
#pragma unroll
          for (int w = 0; w < kMicro; ++w) {
            const float dd = (ax[u] - bx[w]) + (ay[u] - by[w]);
            h[u][w] = fmaf(dd, dd, h[u][w]);
            s[u][w] = fmaf(ax[u], bx[w], s[u][w]);
          }
      } else {
        const float4 a2 = *reinterpret_cast<const float4*>(&As[NA - 1][k][ty * kMicro]);
        const float4 b2 = *reinterpret_cast<const float4*>(&Bs[NA - 1][k][tx * kMicro]);
        const float az[4] = {a2.x, a2.y, a2.z, a2.w}, bz[4] = {b2.x, b2.y, b2.z, b2.w};
#pragma unroll
        for (int u = 0; u < kMicro; ++u)
#pragma unroll
          for (int w = 0; w < kMicro; ++w) h[u][w] = fmaf(ax[u] - bx[w], (ay[u] - by[w]) + (az[u] - bz[w]), h[u][w]);
      }
      if (++cls == C) {  // a sample is complete (uniform branch)
        cls = 0;
        const bool flush = ++done == kFlush;
        if (flush) done = 0;
#pragma unroll
        for (int u = 0; u < kMicro; ++u)
#pragma unroll
          for (int w = 0; w < kMicro; ++w) {
            part[u][w] += Traits<DIV>::sample_value(h[u][w], s[u][w]);
            h[u][w] = 0.f;
            s[u][w] = 0.f;
            if (flush) {
              acc[(u * kMicro + w) * kThreads + threadIdx.x] += (double)part[u][w];
              part[u][w] = 0.f;
            }
          }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int u = 0; u < kMicro; ++u)
#pragma unroll
    for (int w = 0; w < kMicro; ++w) {
      const int64_t i = i0 + ty * kMicro + u, j = j0 + tx * kMicro + w;
      if (i >= ma || j >= mb) continue;
      if (symmetric && j <= i) continue;
      const double total = acc[(u * kMicro + w) * kThreads + threadIdx.x] + (double)part[u][w];
      atomicAdd(&out[i * mb + j], total * inv_norm);
    }
}

template <int DIV>
int tile_blocks_per_sm() {
  static int cached = -1;
  if (cached < 0) {
    TG_CUDA_CHECK(
        cudaFuncSetAttribute(tile_kernel<DIV>, cudaFuncAttributeMaxDynamicSharedMemorySize, tile_smem_bytes<DIV>()));
    int bps = 1;
    TG_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&bps, tile_kernel<DIV>, kThreads, tile_smem_bytes<DIV>()));
    cached = bps > 0 ? bps : 1;
  }
  return cached;
}

__global__ void mirror_kernel(double* out, int64_t m) {
  const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= m * m) return;
  const int64_t i = idx / m, j = idx % m;
  if (i > j) out[idx] = out[j * m + i];
}

int64_t round_up(int64_t x, int64_t to) {
  return (x + to - 1) / to * to;
}

}  // namespace

int64_t pairwise_scratch_floats(int64_t ma, int64_t mb, bool cross, int64_t C, int divergence, int64_t samples) {
  const int64_t arrays = staged_arrays(divergence);
  const int64_t per_sample = (round_up(ma, kTile) + (cross ? round_up(mb, kTile) : 0)) * C * arrays;
  return per_sample * samples;
}

void pairwise(const View3& a, const double* a_inv, const View3* b, const double* b_inv, double* out, int divergence,
              int64_t norm, bool mirror, float* scratch, int64_t scratch_floats, std::uintptr_t stream_ptr) {
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_ptr);
  const bool symmetric = b == nullptr;
  const View3& bv = symmetric ? a : *b;
  const int64_t ma = a.shape[0], mb = bv.shape[0], N = a.shape[1], C = a.shape[2];
  const int64_t per_sample = pairwise_scratch_floats(ma, mb, !symmetric, C, divergence, 1);
  const int64_t nc = std::min<int64_t>(N, scratch_floats / per_sample);
  if (nc < 1) throw std::invalid_argument("scratch buffer too small for one sample");
  const int64_t arrays = staged_arrays(divergence);
  const bool log_pair = arrays == 3;
  const int64_t mpa = round_up(ma, kTile), mpb = symmetric ? mpa : round_up(mb, kTile);
  float* base = scratch;
  Staged A{base, base + nc * C * mpa, arrays == 3 ? base + 2 * nc * C * mpa : nullptr, mpa};
  Staged B = A;
  if (!symmetric) {
    float* bb = base + arrays * nc * C * mpa;
    B = Staged{bb, bb + nc * C * mpb, arrays == 3 ? bb + 2 * nc * C * mpb : nullptr, mpb};
  }
  const int tiles_i = (int)(mpa / kTile), tiles_j = (int)(mpb / kTile);
  const int64_t tiles = symmetric ? (int64_t)tiles_i * (tiles_i + 1) / 2 : (int64_t)tiles_i * tiles_j;
  int dev = 0, sms = 132;
  TG_CUDA_CHECK(cudaGetDevice(&dev));
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const double inv_norm = 1.0 / (double)(norm > 0 ? norm : N);
  for (int64_t n0 = 0; n0 < N; n0 += nc) {
    const int64_t len = std::min(nc, N - n0);
    const int64_t entries = len * C * mpa;
    const unsigned sblocks = (unsigned)std::min<int64_t>((entries + 255) / 256, (int64_t)sms * 32);
    stage_kernel<<<sblocks, 256, 0, stream>>>(a, a_inv, n0, len, mpa, log_pair, const_cast<float*>(A.x),
                                              const_cast<float*>(A.y), const_cast<float*>(A.z));
    TG_CUDA_CHECK(cudaGetLastError());
    if (!symmetric) {
      const int64_t eb = len * C * mpb;
      const unsigned bblocks = (unsigned)std::min<int64_t>((eb + 255) / 256, (int64_t)sms * 32);
      stage_kernel<<<bblocks, 256, 0, stream>>>(bv, b_inv, n0, len, mpb, log_pair, const_cast<float*>(B.x),
                                                const_cast<float*>(B.y), const_cast<float*>(B.z));
      TG_CUDA_CHECK(cudaGetLastError());
    }
    dispatch_divergence(divergence, [&](auto d) {
      constexpr int D = decltype(d)::value;
      // about 8 waves of resident blocks, so the last partial wave costs little
      const int64_t want = (int64_t)sms * tile_blocks_per_sm<D>() * 8;  // (also sets the shared memory limit)
      int sp = (int)std::max<int64_t>(1, std::min<int64_t>((want + tiles - 1) / tiles, len));
      sp = (int)std::min<int64_t>(sp, 65535);
      const int64_t per_split = (len + sp - 1) / sp;
      dim3 grid((unsigned)tiles, 1, (unsigned)sp);
      tile_kernel<D><<<grid, kThreads, tile_smem_bytes<D>(), stream>>>(A, B, ma, mb, (int)C, len, per_split, symmetric,
                                                                       tiles_j, inv_norm, out);
    });
    TG_CUDA_CHECK(cudaGetLastError());
  }
  if (symmetric && mirror) {
    const int64_t total = ma * ma;
    mirror_kernel<<<(unsigned)((total + 255) / 256), 256, 0, stream>>>(out, ma);
    TG_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace cuda
}  // namespace taskgeom
