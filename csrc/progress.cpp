// progress on the ignorance -> truth geodesic: input checks and binding; kernels in cpu/ and cuda/.
#include "bindings.h"

#ifdef TASKGEOM_CUDA_MODULE
#include "cuda/progress_cuda.h"
#else
#include "cpu/progress_cpu.h"
#endif

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

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
// Jobs a helper thread was still inside when their call returned, with the Python objects that own the
// memory the helper reads (short_jobs.h): released, with the GIL held, by a later call once idle, or in a
// forked child (which has no helper threads) at its first call.
struct ParkedJob {
  std::shared_ptr<cpu::ShortJob> job;
  py::object keep;
  pid_t pid;
};
using Parked = std::vector<ParkedJob>;
static Parked& parked() {
  static Parked* p = new Parked();  // never destroyed: no Python object is released after finalisation
  return *p;
}

static void release_idle_jobs() {
  Parked& p = parked();
  const pid_t self = getpid();
  for (size_t k = 0; k < p.size();) {
    if (p[k].job->idle() || p[k].pid != self) {
      if (k + 1 != p.size()) p[k] = std::move(p.back());
      p.pop_back();
    } else {
      ++k;
    }
  }
}

static void progress_binding(py::tuple a, std::uintptr_t labels, int64_t n_labels, std::uintptr_t out, int threads,
                             bool validate, double tol, double xtol, py::object keep) {
  View3 av = parse_view(a, "models");
  if (n_labels != av.shape[1])
    throw std::invalid_argument("labels has " + std::to_string(n_labels) + " entries but models have " +
                                std::to_string(av.shape[1]) + " samples");
  if (!labels || !out) throw std::invalid_argument("null data pointer");
  release_idle_jobs();
  BadInput bad;
  std::shared_ptr<cpu::ShortJob> job;
  std::exception_ptr error;  // (e.g. out of memory) raised once the inputs are safe
  {
    py::gil_scoped_release release;
    try {
      bad = cpu::progress(av, reinterpret_cast<const int64_t*>(labels), reinterpret_cast<double*>(out), threads,
                          validate, tol, xtol, &job);
    } catch (...) {
      error = std::current_exception();
    }
  }
  if (job && !job->idle()) parked().push_back({job, keep, getpid()});
  if (error) std::rethrow_exception(error);
  raise_if_bad(bad, "models");
}

// Tests of short_jobs.h's contract: `items` items of `item_ms` each on `threads` threads, where the first item
// a helper takes stalls `stall_ms` (a helper set aside by the scheduler). Returns (seconds until the call
// returned, every result right, whether a helper stalled).
namespace {
class StallJob : public cpu::ShortJob {
 public:
  StallJob(int64_t items, double item_ms, double stall_ms)
      : ShortJob(items), caller_(std::this_thread::get_id()), item_ms_(item_ms), stall_ms_(stall_ms) {}
  std::atomic<bool> stalled{false};

 protected:
  void run(int64_t i) override {
    bool expected = false;
    if (std::this_thread::get_id() != caller_ && stalled.compare_exchange_strong(expected, true))
      std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(stall_ms_));
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(item_ms_));
    publish(i, 0.5 * (double)i);
  }

 private:
  const std::thread::id caller_;
  const double item_ms_, stall_ms_;
};
}  // namespace

static py::tuple short_jobs_check(int64_t items, int threads, double item_ms, double stall_ms) {
  auto job = std::make_shared<StallJob>(items, item_ms, stall_ms);
  const auto t0 = std::chrono::steady_clock::now();
  {
    py::gil_scoped_release release;
    cpu::run_short(job, threads);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  bool right = true;
  for (int64_t i = 0; i < items; ++i) right = right && job->result(i) == 0.5 * (double)i;
  return py::make_tuple(seconds, right, job->stalled.load());
}
#endif

void register_progress(py::module_& m) {
#ifdef TASKGEOM_CUDA_MODULE
  m.def("progress", &progress_binding, py::arg("models"), py::arg("labels"), py::arg("n_labels"), py::arg("out"),
        py::arg("scratch"), py::arg("xtol"), py::arg("stream"),
        "Progress of device models on the ignorance -> truth geodesic (eq. 4).");
#else
  m.def("progress", &progress_binding, py::arg("models"), py::arg("labels"), py::arg("n_labels"), py::arg("out"),
        py::arg("threads"), py::arg("validate"), py::arg("tol"), py::arg("xtol"), py::arg("keep"),
        "Progress of host models on the ignorance -> truth geodesic (eq. 4).");
  m.def("_short_jobs_check", &short_jobs_check, py::arg("items"), py::arg("threads"), py::arg("item_ms"),
        py::arg("stall_ms"), "Tests only: a short call whose first helper item stalls (cpu/short_jobs.h).");
#endif
}

}  // namespace taskgeom
