// A memory setting that ONNX Runtime's C API does not offer, applied only where it is checked to be safe
// (memory-settings.cc says why it matters, with the measurements).
#pragma once
#include "ort-abi.h"

namespace moka {

// Finds SessionOptions::enable_mem_reuse inside ORT's session options object (see the .cc). Call once, after
// the API table is known; returns whether it was found.
bool FindMemReuseSwitch(const ort::Api* api);

// Turns ORT's allocation planner's buffer reuse off in `opts` (options made by CreateSessionOptions, with
// DisableMemPattern already called, as every session of the addon has). Returns false, changing nothing, when
// the switch was not found or `opts` does not look as the search found it.
bool DisableMemReuse(ort::SessionOptions* opts);

}  // namespace moka
