// Weight files mapped once per process and shared by every session of the addon (shared-weights.cc says why).
#pragma once
#include <cstdint>
#include <string>

namespace moka {

// Maps the file at `path` read-only, whole, or takes one more reference to its mapping. Returns its first byte,
// and its size in *size; nullptr with *error set when it cannot be opened or mapped. Thread-safe.
const char* MapWeightFile(const std::string& path, int64_t* size, std::string* error);

// Drops one reference taken by MapWeightFile; the last one unmaps the file.
void UnmapWeightFile(const std::string& path);

}  // namespace moka
