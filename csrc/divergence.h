// The divergences taskgeom's kernels compute: one list, one enum, one dispatch point.
//
// Adding a divergence means: one line in TASKGEOM_DIVERGENCES below, one traits struct per backend
// (cpu/pairwise_cpu.cpp, cuda/pairwise_cuda.cu) and its entry in taskgeom/divergences.py. The enum is
// exported to Python as taskgeom._C.Divergence (and taskgeom._cuda.Divergence), so the codes are never
// copied by hand.
#pragma once
#include <stdexcept>
#include <string>
#include <type_traits>

namespace taskgeom {

// X(enumerator, Python name, code)
#define TASKGEOM_DIVERGENCES(X)         \
  X(kBhattacharyya, "bhattacharyya", 0) \
  X(kSymmetricKL, "symmetric_kl", 1)    \
  X(kHellinger, "hellinger", 2)

enum Divergence : int {
#define TASKGEOM_ENUMERATOR(e, name, code) e = code,
  TASKGEOM_DIVERGENCES(TASKGEOM_ENUMERATOR)
#undef TASKGEOM_ENUMERATOR
};

template <int D>
using DivergenceTag = std::integral_constant<int, D>;

// Calls f(DivergenceTag<D>{}) for the runtime code `div`, so that kernels are instantiated per
// divergence at compile time; an unknown code throws std::invalid_argument (a ValueError in Python).
template <typename F>
decltype(auto) dispatch_divergence(int div, F&& f) {
  switch (div) {
#define TASKGEOM_CASE(e, name, code) \
  case e:                            \
    return f(DivergenceTag<e>{});
    TASKGEOM_DIVERGENCES(TASKGEOM_CASE)
#undef TASKGEOM_CASE
    default:
      throw std::invalid_argument("unknown divergence code " + std::to_string(div));
  }
}

}  // namespace taskgeom
