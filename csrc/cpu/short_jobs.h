// Threads on a shared machine: short parallel calls whose caller never waits on a descheduled thread
// (ShortJob, run_short), and a wait that sleeps whatever OpenMP wait policy is in force (EventCount).
//
// A call of a few milliseconds split over OpenMP threads ends at a barrier: on a machine where other
// processes run, the caller then waits for whichever thread the scheduler has set aside, often a whole
// time slice, and the call takes 1.4x its fair share (issue 27). Here the caller and up to threads - 1
// persistent helper threads claim items one at a time; when none is left to claim, the caller completes
// every item a helper has claimed but not finished by computing it itself (after waiting about one
// item's time for it), so it returns as soon as its own work is done. An item's result must therefore
// not depend on which thread computes it, and publishing it twice must be harmless: `ShortJob::run`
// publishes through `publish`, where the first value wins (both values are the same bits).
//
// A helper still inside an item when the caller returns keeps reading the job's inputs: the job says so
// (`idle()` is false) and the caller must keep those inputs alive until it is (the Python binding parks
// the owning objects until the next call). After fork() the child has no helpers; its calls run on the
// calling thread alone.
#pragma once
#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>

namespace taskgeom {
namespace cpu {

class ShortJob {
 public:
  explicit ShortJob(int64_t items);
  virtual ~ShortJob() = default;
  ShortJob(const ShortJob&) = delete;
  ShortJob& operator=(const ShortJob&) = delete;

  int64_t items() const { return items_; }
  // true once no helper can touch the job's inputs any more (checked after run_short returned)
  bool idle() const { return inside_.load() == 0; }
  // the result of item i (valid after run_short returned)
  double result(int64_t i) const;

 protected:
  // compute item i and publish it (publish(i, value)). An exception in a helper leaves the item to the
  // caller, which then meets it itself. A long item may ask `published(i)` now and then and return early
  // when it is (another thread computed it meanwhile).
  virtual void run(int64_t i) = 0;
  void publish(int64_t i, double value);
  bool published(int64_t i) const;

 private:
  friend void run_short(const std::shared_ptr<ShortJob>& job, int threads);
  friend class HelperPool;
  bool take(int64_t* i);            // claim the next item; false when none is left
  void work();                      // a helper's part: claim and run items until none is left
  void complete_rest();             // the caller's end: every item published, by a helper or here
  int64_t fastest_item_ns() const;  // 0 before any item finished

  const int64_t items_;
  std::unique_ptr<std::atomic<uint64_t>[]> results_;    // a sentinel bit pattern until published
  std::unique_ptr<std::atomic<int64_t>[]> started_ns_;  // when a thread started the item (0: not yet)
  std::atomic<int64_t> next_{0};
  std::atomic<int> inside_{0};  // helpers that may still claim or run items
  std::atomic<int64_t> fastest_ns_{std::numeric_limits<int64_t>::max()};
  unsigned csr_ = 0;  // the caller's floating-point control and status (x86 MXCSR), set before helpers run
};

// A count of events that threads with nothing to do wait on, sleeping (futex) after a short spin whatever
// wait policy the OpenMP runtime read at its start: torch loads libgomp first in most programs, and
// libgomp's default spins in its own waits, which on a machine busy with other processes keeps a thread
// burning the share of the one it waits for (issue 27: 3-5x slower beside 4 busy processes). A waiter
// reads epoch(), looks for work, and calls wait(epoch) only if it found none; notify() after any change
// that may give work wakes it, and memory written before notify() is visible after wait() returns.
class EventCount {
 public:
  uint32_t epoch() const { return epoch_.load(std::memory_order_seq_cst); }
  void notify();
  void wait(uint32_t seen);  // returns once epoch() != seen

 private:
  std::atomic<uint32_t> epoch_{0};
  std::atomic<int> sleepers_{0};
};

// Run every item of `job` on the calling thread and up to `threads` - 1 helpers (threads <= 0: OpenMP's
// default count); returns once every item is published.
void run_short(const std::shared_ptr<ShortJob>& job, int threads);

}  // namespace cpu
}  // namespace taskgeom
