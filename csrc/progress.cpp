// progress on the ignorance -> truth geodesic: input checks and binding; kernels in cpu/ and cuda/.
#include "bindings.h"

#ifdef TASKGEOM_CUDA_MODULE
#include "cuda/progress_cuda.h"
#else
#include "cpu/progress_cpu.h"
#endif

namespace py = pybind11;

namespace taskgeom {

#ifdef TASKGEOM_CUDA_MODULE
static void progress_binding(py::tuple a, std::uintptr_t labels, int64_t n_labels, std::uintptr_t out,
                             std::uintptr_t scratch, double xtol, std::uintptr_t stream) {
  View3 av = parse_view(a, "models");
  if (n_labels != av.shape[1])
    throw std::invalid_argument("labels has " + std::to_string(n_labels) + " entries but models have " +
                                std::to_string(av.shape[1]) + " samples");
  if (!labels || !out || !scratch) throw std::invalid_argument("null data pointer");
  py::gil_scoped_release release;
  cuda::progress(av, reinterpret_cast<const int64_t*>(labels), reinterpret_cast<double*>(out),
                 reinterpret_cast<double*>(scratch), xtol, stream);
}
#else
static void progress_binding(py::tuple a, std::uintptr_t labels, int64_t n_labels, std::uintptr_t out, int threads,
                             bool validate, double tol, double xtol) {
  View3 av = parse_view(a, "models");
  if (n_labels != av.shape[1])
    throw std::invalid_argument("labels has " + std::to_string(n_labels) + " entries but models have " +
                                std::to_string(av.shape[1]) + " samples");
  if (!labels || !out) throw std::invalid_argument("null data pointer");
  BadInput bad;
  {
    py::gil_scoped_release release;
    bad = cpu::progress(av, reinterpret_cast<const int64_t*>(labels), reinterpret_cast<double*>(out), threads, validate,
                        tol, xtol);
  }
  raise_if_bad(bad, "models");
}
#endif

void register_progress(py::module_& m) {
#ifdef TASKGEOM_CUDA_MODULE
  m.def("progress", &progress_binding, py::arg("models"), py::arg("labels"), py::arg("n_labels"), py::arg("out"),
        py::arg("scratch"), py::arg("xtol"), py::arg("stream"),
        "Progress of device models on the ignorance -> truth geodesic (eq. 4).");
#else
  m.def("progress", &progress_binding, py::arg("models"), py::arg("labels"), py::arg("n_labels"), py::arg("out"),
        py::arg("threads"), py::arg("validate"), py::arg("tol"), py::arg("xtol"),
        "Progress of host models on the ignorance -> truth geodesic (eq. 4).");
#endif
}

}  // namespace taskgeom
