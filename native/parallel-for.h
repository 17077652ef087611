// A small persistent thread pool for the custom kernels: ONNX Runtime's own pool is not reachable through the
// version-13 C API, and starting threads per call would cost more than a one-token product takes.
#pragma once
#include <cstdint>
#include <functional>

namespace moka {

// Runs fn(begin, end) over [0, total) split into contiguous chunks of at least `grain` items, on up to
// ThreadCount() threads (the calling thread included); returns when all chunks are done. Calls may come from
// several threads at once (each ORT session runs on its own thread): they are served one after another.
void ParallelFor(int64_t total, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Threads ParallelFor uses: MOKA_NUM_THREADS if set (>= 1), else the hardware threads.
int ThreadCount();

}  // namespace moka
