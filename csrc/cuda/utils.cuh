#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#define TG_CUDA_CHECK(expr)                                                                                            \
  do {                                                                                                                 \
    cudaError_t _err = (expr);                                                                                         \
    if (_err != cudaSuccess)                                                                                           \
      throw std::runtime_error(std::string("taskgeom CUDA error: ") + cudaGetErrorString(_err) + " at " __FILE__ ":" + \
                               std::to_string(__LINE__));                                                              \
  } while (0)
