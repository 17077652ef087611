// Single-thread benchmark of moka::MatMul4bitRows at LLaMA-2-7B shapes, block_size 64.
//
// For [N, K] in {[4096, 4096], [11008, 4096]} and M in {1, 4, 16}: ns per weight and GB/s of packed weight read
// (N * K / 2 bytes per call; absmax adds 1/32 of that and is not counted), for the AVX-512, AVX2+FMA and portable
// paths. Also the plain float32 decode of the whole weight (a straightforward loop of our own, standing in for what
// MatMulBnb4 does before its sgemm), whose cost comes before any arithmetic.
//
// The weight is copied until the copies exceed 64 MiB and the calls rotate through them, so each call reads its
// weight from DRAM as in generation (a 7B model does not fit in cache), not from L3. Each figure is the median of
// `reps` timed calls after two warm-up calls. Usage: matmul-4bit-bench [reps] (default 15).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "matmul-4bit-internal.h"
#include "matmul-4bit.h"

namespace {

constexpr int64_t kBlockSize = 64;
constexpr size_t kRotateBytes = size_t(64) << 20;

const float kNf4[16] = {-1.0f, -0.6961928f, -0.52507305f, -0.39491749f, -0.28444138f, -0.18477343f,
                        -0.09105004f, 0.0f, 0.0795803f, 0.1609302f, 0.2461123f, 0.33791524f,
                        0.44070983f, 0.562617f, 0.72295684f, 1.0f};

struct Weight {
  std::vector<uint8_t> packed;
  std::vector<float> absmax;
};

std::vector<Weight> MakeWeights(int64_t N, int64_t K, std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.01f, 1.0f);
  Weight w;
  w.packed.resize(N * K / 2);
  for (auto& v : w.packed) v = static_cast<uint8_t>(byte(rng));
  w.absmax.resize(N * K / kBlockSize);
  for (auto& v : w.absmax) v = scale(rng);
  const size_t copies = std::max<size_t>(2, kRotateBytes / w.packed.size() + 1);
  return std::vector<Weight>(copies, w);
}

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <typename Call>
double MedianSeconds(int reps, size_t copies, Call call) {
  call(0);
  call(1 % copies);
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const double t0 = Seconds();
    call(r % copies);
    t.push_back(Seconds() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The whole weight to float32, block by block: what a decode-then-sgemm operator pays before multiplying.
void DecodeAll(const uint8_t* packed, const float* absmax, int64_t count, float* out) {
  for (int64_t b = 0; b < count / kBlockSize; ++b) {
    const float scale = absmax[b];
    const uint8_t* p = packed + b * kBlockSize / 2;
    float* o = out + b * kBlockSize;
    for (int j = 0; j < kBlockSize / 2; ++j) {
      o[2 * j] = kNf4[p[j] >> 4] * scale;
      o[2 * j + 1] = kNf4[p[j] & 0x0f] * scale;
    }
  }
}

void Report(const char* what, int64_t N, int64_t K, int64_t M, double seconds) {
  const double weights = double(N) * K;
  std::printf("[%5lld, %lld]  M=%-2lld  %-14s  %8.3f ms  %7.4f ns/weight  %6.2f GB/s packed\n", (long long)N,
              (long long)K, (long long)M, what, seconds * 1e3, seconds * 1e9 / weights, weights / 2 / seconds / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 15;
  const bool avx2 = moka::detail::HasAvx2Fma();
  const bool avx512 = moka::detail::HasAvx512();
  if (!avx2) std::printf("AVX2+FMA path unavailable here: only the portable path is timed\n");
  if (avx2 && !avx512) std::printf("AVX-512 path unavailable here: not timed\n");
  std::mt19937 rng(7);
  const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}};
  for (const auto& shape : shapes) {
    const int64_t N = shape[0], K = shape[1];
    const std::vector<Weight> weights = MakeWeights(N, K, rng);
    std::vector<float> y(16 * N);
    for (int64_t M : {1, 4, 16}) {
      std::vector<float> x(M * K);
      std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
      for (auto& v : x) v = unit(rng);
      auto timed = [&](auto kernel) {
        return MedianSeconds(reps, weights.size(), [&](size_t c) {
          kernel(x.data(), M, K, weights[c].packed.data(), weights[c].absmax.data(), kNf4, N, kBlockSize, y.data(),
                 0, N);
        });
      };
      if (avx512) Report("avx512", N, K, M, timed(moka::detail::MatMul4bitRowsAvx512));
      if (avx2) Report("avx2", N, K, M, timed(moka::detail::MatMul4bitRowsAvx2));
      Report("scalar", N, K, M, timed(moka::detail::MatMul4bitRowsScalar));
    }
    std::vector<float> decoded(N * K);
    const double decode = MedianSeconds(reps, weights.size(), [&](size_t c) {
      DecodeAll(weights[c].packed.data(), weights[c].absmax.data(), N * K, decoded.data());
    });
    Report("decode only", N, K, 0, decode);
  }
  return 0;
}
