// pairwise divergence matrices: input checks and binding; kernels in cpu/ and cuda/.
#include "bindings.h"

#ifdef TASKGEOM_CUDA_MODULE
#include "cuda/pairwise_cuda.h"
#include "cuda/pairwise_fp64tc.h"
#else
#include "cpu/pairwise_cpu.h"
#include "tc_math.h"
#endif

namespace py = pybind11;

namespace taskgeom {

#ifdef TASKGEOM_CUDA_MODULE
static void pairwise_binding(py::tuple a, std::uintptr_t a_inv, py::object b, std::uintptr_t b_inv, std::uintptr_t out,
                             int divergence, int64_t norm, bool mirror, std::uintptr_t scratch, int64_t scratch_floats,
                             std::uintptr_t stream) {
  View3 av, bv;
  const bool cross = parse_operands(a, b, divergence, av, bv);
  if (out == 0 || a_inv == 0 || (cross && b_inv == 0) || scratch == 0) throw std::invalid_argument("null data pointer");
  py::gil_scoped_release release;
  cuda::pairwise(av, reinterpret_cast<const double*>(a_inv), cross ? &bv : nullptr,
                 reinterpret_cast<const double*>(b_inv), reinterpret_cast<double*>(out), divergence, norm, mirror,
                 reinterpret_cast<float*>(scratch), scratch_floats, stream);
}

static void pairwise_fp64tc_binding(py::tuple a, std::uintptr_t a_inv, py::object b, std::uintptr_t b_inv,
                                    std::uintptr_t out, int divergence, int64_t norm, bool mirror,
                                    std::uintptr_t scratch, int64_t scratch_doubles, int config,
                                    std::uintptr_t stream) {
  View3 av, bv;
  const bool cross = parse_operands(a, b, divergence, av, bv);
  if (out == 0 || a_inv == 0 || (cross && b_inv == 0) || scratch == 0) throw std::invalid_argument("null data pointer");
  py::gil_scoped_release release;
  cuda::pairwise_fp64tc(av, reinterpret_cast<const double*>(a_inv), cross ? &bv : nullptr,
                        reinterpret_cast<const double*>(b_inv), reinterpret_cast<double*>(out), divergence, norm,
                        mirror, reinterpret_cast<double*>(scratch), scratch_doubles, config, stream);
}
#else
static void pairwise_binding(py::tuple a, py::object b, std::uintptr_t out, int divergence, int64_t chunk, int threads,
                             bool validate, double tol) {
  View3 av, bv;
  const bool cross = parse_operands(a, b, divergence, av, bv);
  if (out == 0) throw std::invalid_argument("out: null data pointer");
  BadInput bad;
  {
    py::gil_scoped_release release;
    bad = cpu::pairwise(av, cross ? &bv : nullptr, reinterpret_cast<double*>(out), divergence, chunk, threads, validate,
                        tol);
  }
  raise_if_bad(bad, bad.which == 1 ? "others" : "models");
}

// The shared host/device arithmetic of the fp64 tensor-core kernel (tc_math.h) on host arrays, for the
// tests: bc is float64 (n, lanes) C-contiguous; out[l] = sum_n -log(max(bc[n, l], BC_FLOOR)) computed as
// the kernel does (running product, exponent split every `split_every` samples, one logarithm per lane).
static void tc_product_log_binding(std::uintptr_t bc, int64_t n, int64_t lanes, std::uintptr_t out, int split_every) {
  if (bc == 0 || out == 0) throw std::invalid_argument("null data pointer");
  if (split_every < 1 || split_every > tc::kSplitEvery)
    throw std::invalid_argument("split_every must be in [1, " + std::to_string(tc::kSplitEvery) + "]");
  const double* x = reinterpret_cast<const double*>(bc);
  double* o = reinterpret_cast<double*>(out);
  for (int64_t l = 0; l < lanes; ++l) {
    tc::Product prod;
    int since = 0;
    for (int64_t i = 0; i < n; ++i) {
      prod.multiply(x[i * lanes + l]);
      if (++since == split_every) {
        since = 0;
        prod.renormalise();
      }
    }
    o[l] = prod.finish();
  }
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
  m.def("fp64tc_scratch_doubles", &cuda::fp64tc_scratch_doubles, py::arg("ma"), py::arg("mb"), py::arg("cross"),
        py::arg("classes"), py::arg("config"), py::arg("samples"));
  m.def("fp64tc_configs", &cuda::fp64tc_configs, "Names of the compiled-in fp64 tensor-core kernel instances.");
  m.def("fp64tc_config_archs", &cuda::fp64tc_config_archs,
        "Compute capability x10 each instance needs (80 or 90), in config order.");
  m.def("fp64tc_config_max_classes", &cuda::fp64tc_config_max_classes,
        "The most classes each instance handles (0: any), in config order.");
  m.def("fp64tc_available", &cuda::fp64tc_available,
        "Whether the current device runs the fp64 tensor-core kernel (sm_80+ and a binary built for it).");
  m.def("pairwise_fp64tc", &pairwise_fp64tc_binding, py::arg("models"), py::arg("models_inv_sum"), py::arg("others"),
        py::arg("others_inv_sum"), py::arg("out"), py::arg("divergence"), py::arg("norm"), py::arg("mirror"),
        py::arg("scratch"), py::arg("scratch_doubles"), py::arg("config"), py::arg("stream"),
        "Bhattacharyya / squared Hellinger matrix on the FP64 tensor cores (see _cuda_ops.py).");
#else
  m.def("pairwise", &pairwise_binding, py::arg("models"), py::arg("others"), py::arg("out"), py::arg("divergence"),
        py::arg("chunk"), py::arg("threads"), py::arg("validate"), py::arg("tol"),
        "Pairwise divergence matrix of host arrays into a float64 buffer (see kernels.py).");
  m.def("tc_product_log", &tc_product_log_binding, py::arg("bc"), py::arg("n"), py::arg("lanes"), py::arg("out"),
        py::arg("split_every"), "The fp64 tensor-core kernel's product and logarithm (tc_math.h) on host arrays.");
  m.attr("tc_split_every") = tc::kSplitEvery;
#endif
}

}  // namespace taskgeom
