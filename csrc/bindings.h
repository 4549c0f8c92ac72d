// Helpers shared by the binding files: parse array views passed from taskgeom/kernels.py and check them.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"

namespace taskgeom {

// A view arrives as (data_ptr, dtype_code, (m, N, C), (stride_m, stride_N, stride_C)), strides in elements.
inline View3 parse_view(const pybind11::tuple& t, const char* name) {
  if (t.size() != 4) throw std::invalid_argument(std::string(name) + ": expected (ptr, dtype, shape, strides)");
  View3 v;
  v.ptr = t[0].cast<std::uintptr_t>();
  v.dtype = t[1].cast<int>();
  auto shape = t[2].cast<std::vector<int64_t>>();
  auto stride = t[3].cast<std::vector<int64_t>>();
  if (shape.size() != 3 || stride.size() != 3)
    throw std::invalid_argument(std::string(name) + ": expected a 3-d (models, samples, classes) array");
  for (int k = 0; k < 3; ++k) {
    if (shape[k] < 1)
      throw std::invalid_argument(std::string(name) + ": every dimension must be at least 1, got shape (" +
                                  std::to_string(shape[0]) + ", " + std::to_string(shape[1]) + ", " +
                                  std::to_string(shape[2]) + ")");
    v.shape[k] = shape[k];
    v.stride[k] = stride[k];
  }
  if (v.dtype < kFloat32 || v.dtype > kFloat64)
    throw std::invalid_argument(std::string(name) + ": unsupported dtype code " + std::to_string(v.dtype));
  if (v.ptr == 0) throw std::invalid_argument(std::string(name) + ": null data pointer");
  return v;
}

inline void check_same_events(const View3& a, const View3& b) {
  if (a.shape[1] != b.shape[1])
    throw std::invalid_argument("models and others have different numbers of samples (" + std::to_string(a.shape[1]) +
                                " vs " + std::to_string(b.shape[1]) + ")");
  if (a.shape[2] != b.shape[2])
    throw std::invalid_argument("models and others have different numbers of classes (" + std::to_string(a.shape[2]) +
                                " vs " + std::to_string(b.shape[2]) + ")");
}

inline void check_divergence(int divergence) {
  dispatch_divergence(divergence, [](auto) {});  // throws for an unknown code
}

// The operands of a pairwise call: models, optional others (same samples and classes), a known divergence.
// Returns whether there are others (a cross matrix).
inline bool parse_operands(const pybind11::tuple& a, const pybind11::object& b, int divergence, View3& av, View3& bv) {
  av = parse_view(a, "models");
  const bool cross = !b.is_none();
  if (cross) {
    bv = parse_view(b.cast<pybind11::tuple>(), "others");
    check_same_events(av, bv);
  }
  check_divergence(divergence);
  return cross;
}

inline void raise_if_bad(const BadInput& bad, const char* which) {
  if (bad.kind != kOk) throw std::invalid_argument(describe_bad(bad, which));
}

void register_pairwise(pybind11::module_& m);
void register_progress(pybind11::module_& m);

}  // namespace taskgeom
