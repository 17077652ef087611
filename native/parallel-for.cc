#include "parallel-for.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace moka {
namespace {

class Pool {
 public:
  explicit Pool(int threads) {
    for (int i = 1; i < threads; i++) workers_.emplace_back([this] { Work(); });
  }
  // The pool lives as long as the process (a static that is never destroyed: joining threads at exit could
  // deadlock with a session still running on another thread).

  void Run(int64_t total, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    std::lock_guard<std::mutex> one_job_at_a_time(job_mutex_);
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(Threads(), total / std::max<int64_t>(grain, 1)));
    if (chunks == 1) {
      fn(0, total);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      total_ = total;
      chunks_ = chunks;
      next_ = 0;
      pending_ = chunks;
      generation_++;
    }
    wake_.notify_all();
    Drain();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    fn_ = nullptr;
  }

  int Threads() const { return static_cast<int>(workers_.size()) + 1; }

 private:
  // Takes chunks until none is left; the chunk bounds depend only on (total, chunks), not on which thread
  // runs them, so results are the same whatever the scheduling.
  void Drain() {
    for (;;) {
      int64_t c;
      const std::function<void(int64_t, int64_t)>* fn;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (fn_ == nullptr || next_ >= chunks_) return;
        c = next_++;
        fn = fn_;
      }
      (*fn)(total_ * c / chunks_, total_ * (c + 1) / chunks_);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) done_.notify_all();
    }
  }

  void Work() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
      }
      Drain();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t total_ = 0, chunks_ = 0, next_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
};

Pool& ThePool() {
  static Pool* pool = new Pool(ThreadCount());
  return *pool;
}

}  // namespace

int ThreadCount() {
  static const int n = [] {
    const char* env = std::getenv("MOKA_NUM_THREADS");
    const int asked = env ? std::atoi(env) : 0;
    if (asked >= 1) return asked;
    return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  }();
  return n;
}

void ParallelFor(int64_t total, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (total <= 0) return;
  ThePool().Run(total, grain, fn);
}

}  // namespace moka
