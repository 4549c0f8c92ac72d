// Short parallel calls whose caller never waits on a descheduled thread: see short_jobs.h.
#include "cpu/short_jobs.h"

#include <omp.h>
#include <pthread.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <system_error>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace taskgeom {
namespace cpu {

namespace {
// a signalling NaN with a payload: arithmetic never produces it, so it cannot be a published result
constexpr uint64_t kUnpublished = 0x7FF4A5A5A5A5A5A5ull;
constexpr int64_t kClosed = std::numeric_limits<int64_t>::max() / 2;
// how long an idle helper looks for the next call before it sleeps
constexpr int64_t kLingerNs = 100000;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}
}  // namespace

ShortJob::ShortJob(int64_t items)
    : items_(items),
      results_(new std::atomic<uint64_t>[items > 0 ? items : 1]),
      started_ns_(new std::atomic<int64_t>[items > 0 ? items : 1]) {
  for (int64_t i = 0; i < items_; ++i) {
    results_[i].store(kUnpublished, std::memory_order_relaxed);
    started_ns_[i].store(0, std::memory_order_relaxed);
  }
}

double ShortJob::result(int64_t i) const {
  const uint64_t bits = results_[i].load(std::memory_order_acquire);
  double v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

void ShortJob::publish(int64_t i, double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  uint64_t expected = kUnpublished;
  // the first publication wins; a second one carries the same bits
  results_[i].compare_exchange_strong(expected, bits, std::memory_order_acq_rel);
}

bool ShortJob::published(int64_t i) const {
  return results_[i].load(std::memory_order_relaxed) != kUnpublished;
}

bool ShortJob::take(int64_t* i) {
  const int64_t k = next_.fetch_add(1);
  if (k >= items_) return false;
  *i = k;
  return true;
}

void ShortJob::work() {
  int64_t i;
  while (take(&i)) {
    const int64_t t0 = now_ns();
    started_ns_[i].store(t0);
    run(i);
    const int64_t dt = now_ns() - t0;
    int64_t best = fastest_ns_.load(std::memory_order_relaxed);
    while (dt < best && !fastest_ns_.compare_exchange_weak(best, dt, std::memory_order_relaxed)) {
    }
  }
}

int64_t ShortJob::fastest_item_ns() const {
  const int64_t best = fastest_ns_.load(std::memory_order_relaxed);
  return best == std::numeric_limits<int64_t>::max() ? 0 : best;
}

void ShortJob::complete_rest() {
  next_.store(kClosed);  // from here on no thread claims an item
  // An item a helper claimed and has not published: wait about one item's time (a running helper is
  // about to publish it), then compute it here (a descheduled one would keep the caller a time slice).
  // The fastest item measures the work without pre-emption; a mean would grow with the very waits avoided.
  const int64_t patience = fastest_item_ns() * 3 / 2 + 20000;
  for (int64_t i = 0; i < items_; ++i) {
    if (results_[i].load(std::memory_order_acquire) != kUnpublished) continue;
    const int64_t started = started_ns_[i].load();
    const int64_t deadline = (started > 0 ? started : now_ns()) + patience;
    bool published = false;
    for (int spins = 0;; ++spins) {
      if (results_[i].load(std::memory_order_acquire) != kUnpublished) {
        published = true;
        break;
      }
      if ((spins & 63) == 63 && now_ns() > deadline) break;
      spin_pause();
    }
    if (!published) run(i);
  }
}

// Persistent helper threads, started as calls ask for them and never stopped (detached: they wait on a
// condition variable when idle). A posted job is taken by at most `wanted` helpers; the caller withdraws it
// when it is done, so no helper enters a job after its caller returned.
class HelperPool {
 public:
  static HelperPool& get();

  void post(const std::shared_ptr<ShortJob>& job, int helpers) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      try {
        while (started_ < helpers) {
          std::thread(&HelperPool::loop, this).detach();
          ++started_;
        }
      } catch (const std::system_error&) {
        // no more threads to be had (a process or system limit): the ones there are, or the caller alone
      }
      wanted_ = std::min(helpers, started_);
      if (wanted_ == 0) return;
      job_ = job;
      posted_.fetch_add(1, std::memory_order_release);
    }
    if (helpers == 1)
      cv_.notify_one();
    else
      cv_.notify_all();
  }

  void withdraw(const std::shared_ptr<ShortJob>& job) {
    std::lock_guard<std::mutex> lock(mu_);
    if (job_ == job) {
      job_.reset();
      wanted_ = 0;
    }
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (!(job_ && wanted_ > 0) && lingering_ == 0) {
        // Calls often come in a row (progress of every trajectory): one helper looks for the next one for a
        // short while before sleeping, so it is not woken (and queued behind other processes) for each.
        ++lingering_;
        const uint64_t seen = posted_.load(std::memory_order_acquire);
        lock.unlock();
        const int64_t until = now_ns() + kLingerNs;
        for (int spins = 0; posted_.load(std::memory_order_acquire) == seen; ++spins) {
          if ((spins & 63) == 63 && now_ns() > until) break;
          spin_pause();
        }
        lock.lock();
        --lingering_;
      }
      cv_.wait(lock, [this] { return job_ && wanted_ > 0; });
      std::shared_ptr<ShortJob> job = job_;
      if (--wanted_ == 0) job_.reset();
      job->inside_.fetch_add(1);  // under the lock: the caller's withdraw() cannot pass it
      lock.unlock();
#if defined(__x86_64__) || defined(__i386__)
      const unsigned csr = _mm_getcsr();
      _mm_setcsr(job->csr_);
#endif
      try {
        job->work();
      } catch (...) {
        // the item stays unpublished and the caller computes it (and meets the error itself)
      }
#if defined(__x86_64__) || defined(__i386__)
      _mm_setcsr(csr);
#endif
      job->inside_.fetch_sub(1);
      job.reset();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<ShortJob> job_;
  int wanted_ = 0;
  int started_ = 0;
  int lingering_ = 0;  // helpers looking for the next call before they sleep (at most one)
  std::atomic<uint64_t> posted_{0};
};

namespace {
std::atomic<HelperPool*> g_pool{nullptr};

// fork() copies no thread: the child starts from a fresh pool (the old one, possibly locked, is leaked)
void reset_in_child() {
  g_pool.store(nullptr);
}
}  // namespace

HelperPool& HelperPool::get() {
  static const int registered = pthread_atfork(nullptr, nullptr, &reset_in_child);
  (void)registered;
  HelperPool* pool = g_pool.load();
  if (pool) return *pool;
  HelperPool* fresh = new HelperPool();  // never destroyed: helpers may outlive static destructors
  if (g_pool.compare_exchange_strong(pool, fresh)) return *fresh;
  delete fresh;
  return *pool;
}

namespace {
#if defined(__linux__)
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}
void futex_wake_all(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}
#endif
constexpr int64_t kWaitSpinNs = 20000;  // a partner that is running notifies within this; else sleep
}  // namespace

void EventCount::notify() {
  epoch_.fetch_add(1, std::memory_order_seq_cst);
#if defined(__linux__)
  if (sleepers_.load(std::memory_order_seq_cst) > 0) futex_wake_all(&epoch_);
#endif
}

void EventCount::wait(uint32_t seen) {
  const int64_t until = now_ns() + kWaitSpinNs;
  for (int spins = 0; epoch_.load(std::memory_order_seq_cst) == seen; ++spins) {
    if ((spins & 63) == 63 && now_ns() > until) {
#if defined(__linux__)
      // a notifier either sees this sleeper or has moved the epoch before the check below (both seq_cst)
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      while (epoch_.load(std::memory_order_seq_cst) == seen) futex_wait(&epoch_, seen);
      sleepers_.fetch_sub(1, std::memory_order_seq_cst);
#else
      while (epoch_.load(std::memory_order_seq_cst) == seen) std::this_thread::yield();
#endif
      return;
    }
    spin_pause();
  }
}

void run_short(const std::shared_ptr<ShortJob>& job, int threads) {
  if (threads <= 0) threads = omp_get_max_threads();
  const int helpers = (int)std::min<int64_t>(threads - 1, job->items() - 1);
#if defined(__x86_64__) || defined(__i386__)
  job->csr_ = _mm_getcsr();  // helpers compute with the caller's rounding and denormal settings
#endif
  struct Withdraw {  // whatever happens here, no helper enters the job after the caller has left
    HelperPool* pool = nullptr;
    const std::shared_ptr<ShortJob>* job;
    ~Withdraw() {
      if (pool) pool->withdraw(*job);
    }
  } withdraw{nullptr, &job};
  if (helpers > 0) {
    withdraw.pool = &HelperPool::get();
    withdraw.pool->post(job, helpers);
  }
  job->work();
  if (withdraw.pool) withdraw.pool->withdraw(job);
  job->complete_rest();
}

}  // namespace cpu
}  // namespace taskgeom
