// Module definitions: taskgeom._C (CPU, OpenMP) and, compiled with TASKGEOM_CUDA_MODULE, taskgeom._cuda.
#include <pybind11/pybind11.h>

#include <string>

#include "bindings.h"

#ifdef TASKGEOM_CUDA_MODULE
#include "cuda/progress_cuda.h"
#else
#include <omp.h>
#endif

namespace py = pybind11;

namespace taskgeom {

std::string describe_bad(const BadInput& b, const char* which) {
  std::string where =
      std::string(which) + ": model " + std::to_string(b.model) + ", sample " + std::to_string(b.sample);
  switch (b.kind) {
    case kNonFinite:
      return where + ": probability is not finite (" + std::to_string(b.value) + ")";
    case kNegative:
      return where + ": probability is negative (" + std::to_string(b.value) + ")";
    case kNotNormalised:
      return where + ": probabilities sum to " + std::to_string(b.value) + ", not 1";
    case kBadLabel:
      return "labels: sample " + std::to_string(b.sample) + ": label " + std::to_string((long long)b.value) +
             " is outside [0, C)";
    default:
      return where + ": invalid input";
  }
}

}  // namespace taskgeom

static py::dict build_info() {
  py::dict d;
#ifdef TASKGEOM_CUDA_MODULE
  d["cuda_runtime_version"] = taskgeom::cuda::runtime_version();
  d["cuda_architectures"] = std::string(TASKGEOM_CUDA_ARCHS);
  d["cuda_device_count"] = taskgeom::cuda::device_count();
#else
  d["openmp_max_threads"] = omp_get_max_threads();
#if defined(__AVX512F__)
  d["simd"] = "avx512";
#elif defined(__AVX2__)
  d["simd"] = "avx2";
#else
  d["simd"] = "generic";
#endif
#endif
  d["compiler"] = std::string(__VERSION__);
  return d;
}

#ifdef TASKGEOM_CUDA_MODULE
PYBIND11_MODULE(_cuda, m) {
#else
PYBIND11_MODULE(_C, m) {
#endif
  m.doc() = "taskgeom native kernels (raw buffers in, no libtorch)";
  m.def("build_info", &build_info);
  // the divergence codes, from csrc/divergence.h (taskgeom/divergences.py reads them from here)
  py::enum_<taskgeom::Divergence> div(m, "Divergence", py::module_local());
#define TASKGEOM_VALUE(e, name, code) div.value(name, taskgeom::e);
  TASKGEOM_DIVERGENCES(TASKGEOM_VALUE)
#undef TASKGEOM_VALUE
  taskgeom::register_pairwise(m);
  taskgeom::register_progress(m);
}
