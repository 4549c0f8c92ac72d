// Batched progress on the ignorance -> truth geodesic (eq. 4) on the GPU: one block per model.
// Phase 1 computes alpha_n = sum_c sqrt p_nc / sqrt C and beta_n = sqrt p_{n,y_n} in float64 into
// scratch; phase 2 runs the same bracketed Newton iteration as the CPU kernel (f convex), with each
// f', f'' evaluation a block reduction over samples.
#include <cuda_runtime.h>

#include <cmath>

#include "cuda/progress_cuda.h"
#include "cuda/utils.cuh"

namespace taskgeom {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__device__ void block_sum3(double& a, double& b, double& c, double* sh) {
  for (int off = 16; off > 0; off >>= 1) {
    a += __shfl_down_sync(0xffffffffu, a, off);
    b += __shfl_down_sync(0xffffffffu, b, off);
    c += __shfl_down_sync(0xffffffffu, c, off);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) {
    sh[warp * 3] = a;
    sh[warp * 3 + 1] = b;
    sh[warp * 3 + 2] = c;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) {
      a += sh[w * 3];
      b += sh[w * 3 + 1];
      c += sh[w * 3 + 2];
    }
    sh[0] = a;
    sh[1] = b;
    sh[2] = c;
  }
  __syncthreads();
  a = sh[0];
  b = sh[1];
  c = sh[2];
  __syncthreads();
}

__device__ void derivs(const double* alpha, const double* beta, int64_t N, double theta, double l, double* sh,
                       double& g, double& h) {
  const double sa = sin((1 - l) * theta), sb = sin(l * theta);
  const double ca = -theta * cos((1 - l) * theta), cb = theta * cos(l * theta);
  double s1 = 0.0, s2 = 0.0, blow = 0.0;
  for (int64_t k = threadIdx.x; k < N; k += kThreads) {
    const double D = sa * alpha[k] + sb * beta[k];
    const double Dp = ca * alpha[k] + cb * beta[k];
    if (D <= 0) {
      blow += 1.0;
      continue;
    }
    const double r = Dp / D;
    s1 += r;
    s2 += r * r;
  }
  block_sum3(s1, s2, blow, sh);
  g = blow > 0 ? INFINITY : -s1 / (double)N;
  h = theta * theta + s2 / (double)N;
}

__global__ void progress_kernel(View3 a, const int64_t* labels, double* out, double* scratch, double xtol) {
  __shared__ double sh[3 * kThreads / 32];
  __shared__ double state[1];
  const int64_t i = blockIdx.x, N = a.shape[1], C = a.shape[2];
  double* alpha = scratch + 2 * i * N;
  double* beta = alpha + N;
  const double inv_sqrt_c = 1.0 / sqrt((double)C);
  const void* base = reinterpret_cast<const void*>(a.ptr);
  for (int64_t k = threadIdx.x; k < N; k += kThreads) {
    const int64_t row = i * a.stride[0] + k * a.stride[1];
    double sr = 0.0, sum = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const double p = fmax(load_as_double(base, a.dtype, row + c * a.stride[2]), 0.0);
      sr += sqrt(p);
      sum += p;
    }
    const double norm = sum > 0 ? 1.0 / sqrt(sum) : 0.0;  // rows are renormalised
    alpha[k] = sr * inv_sqrt_c * norm;
    beta[k] = sqrt(fmax(load_as_double(base, a.dtype, row + labels[k] * a.stride[2]), 0.0)) * norm;
  }
  __syncthreads();
  const double theta = acos(inv_sqrt_c);
  double g, h;
  derivs(alpha, beta, N, theta, 0.0, sh, g, h);
  if (g >= 0) {
    if (threadIdx.x == 0) out[i] = 0.0;
    return;
  }
  derivs(alpha, beta, N, theta, 1.0, sh, g, h);
  if (g <= 0) {
    if (threadIdx.x == 0) out[i] = 1.0;
    return;
  }
  double lo = 0.0, hi = 1.0, l = 0.5;
  for (int it = 0; it < 200; ++it) {
    derivs(alpha, beta, N, theta, l, sh, g, h);
    if (g > 0)
      hi = l;
    else
      lo = l;
    double next = l - g / h;
    if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
    const double step = fabs(next - l);
    l = next;
    if (step < 1e-3 * xtol || hi - lo < xtol) break;
  }
  if (threadIdx.x == 0) state[0] = l;
  __syncthreads();
  if (threadIdx.x == 0) out[i] = state[0];
}

}  // namespace

void progress(const View3& a, const int64_t* labels, double* out, double* scratch, double xtol,
              std::uintptr_t stream_ptr) {
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_ptr);
  progress_kernel<<<(unsigned)a.shape[0], kThreads, 0, stream>>>(a, labels, out, scratch, xtol);
  TG_CUDA_CHECK(cudaGetLastError());
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

int runtime_version() {
  int v = -1;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) return -1;
  return v;
}

}  // namespace cuda
}  // namespace taskgeom
