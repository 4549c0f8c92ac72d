// Tiled pairwise Bhattacharyya / symmetric-KL matrices on the GPU.
//
// A block computes a 64 x 64 tile of model pairs; each thread a 4 x 4 register micro-tile. The
// (sample, class) dimension is staged through shared memory like the K dimension of a GEMM, as
// sqrt(p) split into float32 hi + lo parts (computed on the fly from the float16/bfloat16/float32
// input), so that per sample h = 1/2 sum_c ((hi_a - hi_b) + (lo_a - lo_b))^2 is free of cancellation.
// At each sample boundary -log(1 - h) is taken with the series of common.h (or -log BC when h > 1/2)
// and added to a float64 accumulator. Samples are split among blocks (gridDim.z) whose partial sums
// are added to `out` with float64 atomics. Symmetric problems launch only tiles with ti <= tj.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "cuda/pairwise_cuda.h"
#include "cuda/utils.cuh"

namespace taskgeom {
namespace cuda {
namespace {

constexpr int kTile = 64;    // models per tile side
constexpr int kMicro = 4;    // models per thread side
constexpr int kThreads = 256;
constexpr int kK = 32;       // staged (sample, class) entries per step

struct Dims {
  int64_t ma, mb, N, C;
  int CT;  // classes per stage (C if C <= kK else kK)
  int S;   // samples per stage
};

// One staged entry: the row-normalised probability (float64 scale 1/sum_c p), as sqrt split into
// float32 hi + lo (Bhattacharyya) or as p with log p split into hi + lo (symmetric KL).
__device__ __forceinline__ void stage_entry(const View3& v, const double* inv_sum, int64_t model, int64_t n,
                                            int64_t c, bool valid, int div, float& x, float& y, float& z) {
  if (!valid) { x = 0.f; y = 0.f; z = 0.f; return; }
  double p = load_as_double(reinterpret_cast<const void*>(v.ptr), v.dtype,
                            model * v.stride[0] + n * v.stride[1] + c * v.stride[2]);
  p = fmax(p, 0.0) * inv_sum[model * v.shape[1] + n];
  if (div == kBhattacharyya) {
    const double r = sqrt(p);
    const float hi = (float)r;
    x = hi;
    y = (float)(r - (double)hi);
    z = 0.f;
  } else {
    const double lp = log(fmax(p, kProbFloor));
    const float lh = (float)lp;
    x = (float)p; y = lh; z = (float)(lp - (double)lh);
  }
}

template <int DIV>
__global__ void __launch_bounds__(kThreads) pairwise_kernel(View3 a, const double* a_inv, View3 b, const double* b_inv,
                                                            Dims d, int64_t samples_per_split,
                                                            bool symmetric, int tiles_j, double inv_norm,
                                                            double* out) {
  __shared__ __align__(16) float Ax[kK][kTile];
  __shared__ __align__(16) float Ay[kK][kTile];
  __shared__ __align__(16) float Az[DIV == kSymmetricKL ? kK : 1][kTile];
  __shared__ __align__(16) float Bx[kK][kTile];
  __shared__ __align__(16) float By[kK][kTile];
  __shared__ __align__(16) float Bz[DIV == kSymmetricKL ? kK : 1][kTile];

  // Which tile: symmetric problems enumerate the upper triangle of tiles row by row.
  int ti, tj;
  if (symmetric) {
    int64_t idx = blockIdx.x;
    ti = 0;
    int64_t row_len = tiles_j;
    while (idx >= row_len) { idx -= row_len; ++ti; --row_len; }
    tj = ti + (int)idx;
  } else {
    ti = blockIdx.x / tiles_j;
    tj = blockIdx.x % tiles_j;
  }
  const int64_t i0 = (int64_t)ti * kTile, j0 = (int64_t)tj * kTile;
  const int64_t n_begin = (int64_t)blockIdx.z * samples_per_split;
  const int64_t n_end = (n_begin + samples_per_split) < d.N ? (n_begin + samples_per_split) : d.N;
  if (n_begin >= n_end) return;

  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float h[kMicro][kMicro], s[kMicro][kMicro];
  double acc[kMicro][kMicro];
#pragma unroll
  for (int u = 0; u < kMicro; ++u)
#pragma unroll
    for (int w = 0; w < kMicro; ++w) { h[u][w] = 0.f; s[u][w] = 0.f; acc[u][w] = 0.0; }

  const int KS = d.S * d.CT;  // entries staged per step (<= kK)
  for (int64_t n0 = n_begin; n0 < n_end; n0 += d.S) {
    for (int64_t c0 = 0; c0 < d.C; c0 += d.CT) {
      const int ct = (int)((d.C - c0) < d.CT ? (d.C - c0) : d.CT);
      // stage: kTile models x KS entries for a and for b
      for (int e = threadIdx.x; e < kTile * KS; e += kThreads) {
        const int k = e % KS, r = e / KS;
        const int64_t n = n0 + k / d.CT, c = c0 + k % d.CT;
        const bool in_k = (k % d.CT) < ct && n < n_end;
        float x, y, z;
        stage_entry(a, a_inv, i0 + r, n, c, in_k && (i0 + r) < d.ma, DIV, x, y, z);
        Ax[k][r] = x; Ay[k][r] = y;
        if (DIV == kSymmetricKL) Az[k][r] = z;
        stage_entry(b, b_inv, j0 + r, n, c, in_k && (j0 + r) < d.mb, DIV, x, y, z);
        Bx[k][r] = x; By[k][r] = y;
        if (DIV == kSymmetricKL) Bz[k][r] = z;
      }
      __syncthreads();
      for (int k = 0; k < KS; ++k) {
        const float4 axv = *reinterpret_cast<const float4*>(&Ax[k][ty * kMicro]);
        const float4 ayv = *reinterpret_cast<const float4*>(&Ay[k][ty * kMicro]);
        const float4 bxv = *reinterpret_cast<const float4*>(&Bx[k][tx * kMicro]);
        const float4 byv = *reinterpret_cast<const float4*>(&By[k][tx * kMicro]);
        const float ax[4] = {axv.x, axv.y, axv.z, axv.w}, ay[4] = {ayv.x, ayv.y, ayv.z, ayv.w};
        const float bx[4] = {bxv.x, bxv.y, bxv.z, bxv.w}, by[4] = {byv.x, byv.y, byv.z, byv.w};
        if (DIV == kBhattacharyya) {
#pragma unroll
          for (int u = 0; u < kMicro; ++u)
#pragma unroll
            for (int w = 0; w < kMicro; ++w) {
              const float dd = (ax[u] - bx[w]) + (ay[u] - by[w]);
              h[u][w] = fmaf(dd, dd, h[u][w]);
              s[u][w] = fmaf(ax[u], bx[w], s[u][w]);
            }
        } else {
          const float4 azv = *reinterpret_cast<const float4*>(&Az[k][ty * kMicro]);
          const float4 bzv = *reinterpret_cast<const float4*>(&Bz[k][tx * kMicro]);
          const float az[4] = {azv.x, azv.y, azv.z, azv.w}, bz[4] = {bzv.x, bzv.y, bzv.z, bzv.w};
#pragma unroll
          for (int u = 0; u < kMicro; ++u)
#pragma unroll
            for (int w = 0; w < kMicro; ++w)
              h[u][w] = fmaf(ax[u] - bx[w], (ay[u] - by[w]) + (az[u] - bz[w]), h[u][w]);
        }
        // sample boundary: the last class of a sample was just consumed
        const bool boundary = (k % d.CT) == d.CT - 1 || (c0 + (k % d.CT) == d.C - 1);
        const bool sample_done = boundary && (c0 + ct >= d.C);
        if (sample_done) {
#pragma unroll
          for (int u = 0; u < kMicro; ++u)
#pragma unroll
            for (int w = 0; w < kMicro; ++w) {
              if (DIV == kBhattacharyya) {
                const float hh = 0.5f * h[u][w];
                acc[u][w] += hh <= 0.5f ? (double)neg_log1m(hh) : -log(fmax((double)s[u][w], kBCFloor));
              } else {
                acc[u][w] += (double)h[u][w];
              }
              h[u][w] = 0.f; s[u][w] = 0.f;
            }
        }
      }
      __syncthreads();
    }
  }
#pragma unroll
  for (int u = 0; u < kMicro; ++u)
#pragma unroll
    for (int w = 0; w < kMicro; ++w) {
      const int64_t i = i0 + ty * kMicro + u, j = j0 + tx * kMicro + w;
      if (i >= d.ma || j >= d.mb) continue;
      if (symmetric && j <= i) continue;
      atomicAdd(&out[i * d.mb + j], acc[u][w] * inv_norm);
    }
}

__global__ void mirror_kernel(double* out, int64_t m) {
  const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= m * m) return;
  const int64_t i = idx / m, j = idx % m;
  if (i > j) out[idx] = out[j * m + i];
}

}  // namespace

void pairwise(const View3& a, const double* a_inv, const View3* b, const double* b_inv, double* out, int divergence,
              int splits, int64_t norm, bool mirror, std::uintptr_t stream_ptr) {
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_ptr);
  const bool symmetric = b == nullptr;
  const View3& bv = symmetric ? a : *b;
  const double* bv_inv = symmetric ? a_inv : b_inv;
  Dims d;
  d.ma = a.shape[0]; d.mb = bv.shape[0]; d.N = a.shape[1]; d.C = a.shape[2];
  d.CT = (int)std::min<int64_t>(d.C, kK);
  d.S = d.C >= kK ? 1 : (int)(kK / d.C);
  const int tiles_i = (int)((d.ma + kTile - 1) / kTile), tiles_j = (int)((d.mb + kTile - 1) / kTile);
  const int64_t tiles = symmetric ? (int64_t)tiles_i * (tiles_i + 1) / 2 : (int64_t)tiles_i * tiles_j;
  if (splits <= 0) {
    int dev = 0, sms = 132;
    TG_CUDA_CHECK(cudaGetDevice(&dev));
    TG_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    const int64_t want = (int64_t)sms * 4;
    splits = (int)std::max<int64_t>(1, std::min<int64_t>((want + tiles - 1) / tiles, d.N / 16 + 1));
  }
  splits = (int)std::min<int64_t>(splits, d.N);
  const int64_t per_split = (d.N + splits - 1) / splits;
  dim3 grid((unsigned)tiles, 1, (unsigned)splits);
  const double inv_norm = 1.0 / (double)(norm > 0 ? norm : d.N);
  if (divergence == kBhattacharyya)
    pairwise_kernel<kBhattacharyya><<<grid, kThreads, 0, stream>>>(a, a_inv, bv, bv_inv, d, per_split, symmetric, tiles_j, inv_norm, out);
  else
    pairwise_kernel<kSymmetricKL><<<grid, kThreads, 0, stream>>>(a, a_inv, bv, bv_inv, d, per_split, symmetric, tiles_j, inv_norm, out);
  TG_CUDA_CHECK(cudaGetLastError());
  if (symmetric && mirror) {
    const int64_t total = d.ma * d.ma;
    mirror_kernel<<<(unsigned)((total + 255) / 256), 256, 0, stream>>>(out, d.ma);
    TG_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace cuda
}  // namespace taskgeom
