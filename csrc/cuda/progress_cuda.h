#pragma once
#include "common.h"

namespace taskgeom {
namespace cuda {

// Device-pointer version of cpu::progress: labels are int64 on the device, `scratch` holds 2*m*N doubles.
void progress(const View3& a, const int64_t* labels, double* out, double* scratch, double xtol, std::uintptr_t stream);

// Device queries used by build_info(); never throw (0 / -1 when no driver or device).
int device_count();
int runtime_version();

}  // namespace cuda
}  // namespace taskgeom
