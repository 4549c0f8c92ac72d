// pairwise divergence matrices: input checks and binding; kernels in cpu/ and cuda/.
#include "bindings.h"

#ifdef TASKGEOM_CUDA_MODULE
#include "cuda/pairwise_cuda.h"
#else
#include "cpu/pairwise_cpu.h"
#endif

namespace py = pybind11;

namespace taskgeom {

#ifdef TASKGEOM_CUDA_MODULE
static void pairwise_binding(py::tuple a, std::uintptr_t a_inv, py::object b, std::uintptr_t b_inv, std::uintptr_t out,
                             int divergence, int64_t norm, bool mirror, std::uintptr_t scratch, int64_t scratch_floats,
                             std::uintptr_t stream) {
  View3 av = parse_view(a, "models");
  View3 bv;
  const bool cross = !b.is_none();
  if (cross) {
    bv = parse_view(b.cast<py::tuple>(), "others");
    check_same_events(av, bv);
  }
  check_divergence(divergence);
  if (out == 0 || a_inv == 0 || (cross && b_inv == 0) || scratch == 0) throw std::invalid_argument("null data pointer");
  py::gil_scoped_release release;
  cuda::pairwise(av, reinterpret_cast<const double*>(a_inv), cross ? &bv : nullptr,
                 reinterpret_cast<const double*>(b_inv), reinterpret_cast<double*>(out), divergence, norm, mirror,
                 reinterpret_cast<float*>(scratch), scratch_floats, stream);
}
#else
static void pairwise_binding(py::tuple a, py::object b, std::uintptr_t out, int divergence, int64_t chunk, int threads,
                             bool validate, double tol) {
  View3 av = parse_view(a, "models");
  View3 bv;
  const bool cross = !b.is_none();
  if (cross) {
    bv = parse_view(b.cast<py::tuple>(), "others");
    check_same_events(av, bv);
  }
  check_divergence(divergence);
  if (out == 0) throw std::invalid_argument("out: null data pointer");
  BadInput bad;
  {
    py::gil_scoped_release release;
    bad = cpu::pairwise(av, cross ? &bv : nullptr, reinterpret_cast<double*>(out), divergence, chunk, threads, validate,
                        tol);
  }
  raise_if_bad(bad, bad.which == 1 ? "others" : "models");
}
#endif

void register_pairwise(py::module_& m) {
#ifdef TASKGEOM_CUDA_MODULE
  m.def("pairwise_scratch_floats", &cuda::pairwise_scratch_floats, py::arg("ma"), py::arg("mb"), py::arg("cross"),
        py::arg("classes"), py::arg("divergence"), py::arg("samples"));
  m.def("pairwise", &pairwise_binding, py::arg("models"), py::arg("models_inv_sum"), py::arg("others"),
        py::arg("others_inv_sum"), py::arg("out"), py::arg("divergence"), py::arg("norm"), py::arg("mirror"),
        py::arg("scratch"), py::arg("scratch_floats"), py::arg("stream"),
        "Pairwise divergence matrix of device arrays into a zeroed float64 device buffer (see kernels.py).");
#else
  m.def("pairwise", &pairwise_binding, py::arg("models"), py::arg("others"), py::arg("out"), py::arg("divergence"),
        py::arg("chunk"), py::arg("threads"), py::arg("validate"), py::arg("tol"),
        "Pairwise divergence matrix of host arrays into a float64 buffer (see kernels.py).");
#endif
}

}  // namespace taskgeom
