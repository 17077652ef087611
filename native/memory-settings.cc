// ORT's planner buffer reuse, out of reach of its C API; measured on a LLaMA-2-7B-shaped NF4 model training
// with MoKA on a 2-core machine (docs/scale.md, "Why the first added layer cost more").
//
// ORT's allocation planner reuses buffers. When it plans a session it hands a freed intermediate buffer to
// the next tensor of exactly the same shape, and keeps the buffer allocated from its first tensor to the
// last read of its last one. A backward that recomputes each decoder layer repeats the same shapes layer
// after layer, so the buffers of the upper layer's backward stayed allocated, idle, through the lower layer's
// recomputed forward: from 1 to 2 layers a training step's peak rose by 500 MB, once (1 × 512 tokens, peak
// RSS: 2557 → 3046 MB). With the reuse off every tensor is allocated (from the arena) when it is made and freed
// after its last read: 2169 → 2296 MB, at the same speed (2.3–2.6 s and 4.2–4.3 s a step). ORT has the switch (SessionOptions::
// enable_mem_reuse; Python's `enable_mem_reuse`), but neither its C API nor a session config key sets it.
// So it is found: in ORT's SessionOptions (the first member of OrtSessionOptions) the bools
// enable_mem_pattern, enable_mem_reuse and enable_cpu_mem_arena are adjacent, in that order, in every
// release since 1.x. FindMemReuseSwitch toggles the two outer ones through the C API on a scratch options
// object and diffs its bytes: exactly one byte must flip for each, two bytes apart, with a byte holding
// `true` between them. Only then is that byte taken for enable_mem_reuse; otherwise nothing is written and
// sessions keep the reuse (and the memory above). `moka doctor` reports it; test/cli/cli.test.ts checks the
// installed ORT passes.
#include "memory-settings.h"

#include <cstring>

namespace moka {
namespace {

const ort::Api* g_api = nullptr;
long g_mem_pattern_offset = -1;  // offset of enable_mem_pattern; enable_mem_reuse is the byte after

// Bytes of the options object compared; the three bools sit well within (about 56 bytes in on x86-64).
constexpr long kScan = 128;

bool Release(ort::Status* s) {
  if (!s) return true;
  g_api->ReleaseStatus(s);
  return false;
}

// The one offset where `before` and `after` differ, going from 1 to 0; -1 when not exactly one such byte.
long FlippedOff(const unsigned char* before, const unsigned char* after) {
  long at = -1;
  for (long i = 0; i < kScan; i++) {
    if (before[i] == after[i]) continue;
    if (at >= 0 || before[i] != 1 || after[i] != 0) return -1;
    at = i;
  }
  return at;
}

}  // namespace

bool FindMemReuseSwitch(const ort::Api* api) {
  g_api = api;
  ort::SessionOptions* opts = nullptr;
  if (!Release(api->CreateSessionOptions(&opts))) return false;
  unsigned char fresh[kScan], no_pattern[kScan], no_arena[kScan];
  std::memcpy(fresh, opts, kScan);
  const bool ok1 = Release(api->DisableMemPattern(opts));
  std::memcpy(no_pattern, opts, kScan);
  const bool ok2 = Release(api->SetCpuMemArena(opts, false));
  std::memcpy(no_arena, opts, kScan);
  api->ReleaseSessionOptions(opts);
  if (!ok1 || !ok2) return false;
  const long pattern = FlippedOff(fresh, no_pattern), arena = FlippedOff(no_pattern, no_arena);
  if (pattern < 0 || arena != pattern + 2 || no_pattern[pattern + 1] != 1) return false;
  g_mem_pattern_offset = pattern;
  return true;
}

bool DisableMemReuse(ort::SessionOptions* opts) {
  if (g_mem_pattern_offset < 0) return false;
  auto* bytes = reinterpret_cast<unsigned char*>(opts);
  // As found: the pattern switch already off, the reuse switch on, the arena switch a bool.
  const unsigned char arena = bytes[g_mem_pattern_offset + 2];
  if (bytes[g_mem_pattern_offset] != 0 || bytes[g_mem_pattern_offset + 1] != 1 || arena > 1) return false;
  bytes[g_mem_pattern_offset + 1] = 0;
  return true;
}

}  // namespace moka
