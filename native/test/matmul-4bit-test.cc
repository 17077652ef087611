// Correctness test of moka::MatMul4bitRows (native/matmul-4bit.cc) against a double-precision reference.
//
// Every path is run on this machine (build with -DMOKA_MATMUL4BIT_NO_AVX2 to check the portable-only build, as on
// aarch64): the run-time dispatch, the portable path (detail::MatMul4bitRowsScalar) and,
// when the CPU has it, the AVX2+FMA path (detail::MatMul4bitRowsAvx2). Shapes cover the fast path (K % 16 == 0 and
// block_size % 16 == 0, with and without blocks straddling rows), the general path (K odd, block_size 2), M above
// the kernel's row tile, and split n ranges whose outside columns must stay untouched and whose own columns must
// equal, bit for bit, those of the whole range.
//
// Tolerance, per element: |y - ref| <= 1e-5 * (sum_k |x[m,k] * w[n,k]| + 1e-30), where ref and w are computed in
// double (w = code[q] * absmax). Float32 accumulation over K terms stays far inside this for the K used here.
// The same bound is checked against the float32 decode-then-dot form (what MatMulBnb4 computes), and the largest
// difference from it is printed, to show the kernel differs from it only by float rounding.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "matmul-4bit-internal.h"
#include "matmul-4bit.h"

namespace {

// bitsandbytes' NF4 levels (the 16 quantiles of N(0, 1), normalized to [-1, 1]).
const float kNf4[16] = {-1.0f,
                        -0.6961928009986877f,
                        -0.5250730514526367f,
                        -0.39491748809814453f,
                        -0.28444138169288635f,
                        -0.18477343022823334f,
                        -0.09105003625154495f,
                        0.0f,
                        0.07958029955625534f,
                        0.16093020141124725f,
                        0.24611230194568634f,
                        0.33791524576187134f,
                        0.44070982933044434f,
                        0.5626170039176941f,
                        0.7229568362236023f,
                        1.0f};

using Kernel = void (*)(const float*, int64_t, int64_t, const uint8_t*, const float*, const float*, int64_t, int64_t,
                        float*, int64_t, int64_t);

struct Problem {
  int64_t M, N, K, block_size;
  std::vector<float> x_store, absmax_store;
  std::vector<uint8_t> packed_store;
  // Views one element past the start of each store, so no input is 32-byte aligned (the kernel must not assume it).
  const float* x() const { return x_store.data() + 1; }
  const float* absmax() const { return absmax_store.data() + 1; }
  const uint8_t* packed() const { return packed_store.data() + 1; }
};

Problem MakeProblem(int64_t M, int64_t N, int64_t K, int64_t block_size, std::mt19937& rng) {
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f), scale(0.01f, 2.0f);
  std::uniform_int_distribution<int> byte(0, 255);
  Problem p{M, N, K, block_size, {}, {}, {}};
  p.x_store.resize(1 + M * K);
  for (auto& v : p.x_store) v = unit(rng);
  p.packed_store.resize(1 + (N * K + 1) / 2);
  for (auto& v : p.packed_store) v = static_cast<uint8_t>(byte(rng));
  p.absmax_store.resize(1 + (N * K + block_size - 1) / block_size);
  for (auto& v : p.absmax_store) v = scale(rng);
  return p;
}

int CodeAt(const uint8_t* packed, int64_t i) { return (i & 1) ? (packed[i / 2] & 0x0f) : (packed[i / 2] >> 4); }

struct Reference {
  std::vector<double> exact;       // [M, N]: sum of x * w in double
  std::vector<double> magnitude;   // [M, N]: sum of |x * w|, the scale of the tolerance
  std::vector<float> decode_dot;   // [M, N]: float32 decode of W, then a float32 dot (MatMulBnb4's form)
};

Reference MakeReference(const Problem& p) {
  Reference ref{std::vector<double>(p.M * p.N), std::vector<double>(p.M * p.N), std::vector<float>(p.M * p.N)};
  for (int64_t n = 0; n < p.N; ++n) {
    for (int64_t m = 0; m < p.M; ++m) {
      double sum = 0, mag = 0;
      float fsum = 0;
      for (int64_t k = 0; k < p.K; ++k) {
        const int64_t i = n * p.K + k;
        const int q = CodeAt(p.packed(), i);
        const float a = p.absmax()[i / p.block_size];
        const double xw = static_cast<double>(p.x()[m * p.K + k]) * (static_cast<double>(kNf4[q]) * a);
        sum += xw;
        mag += std::fabs(xw);
        fsum += p.x()[m * p.K + k] * (kNf4[q] * a);
      }
      ref.exact[m * p.N + n] = sum;
      ref.magnitude[m * p.N + n] = mag;
      ref.decode_dot[m * p.N + n] = fsum;
    }
  }
  return ref;
}

constexpr double kRelTol = 1e-5;
constexpr float kUntouched = 12345.0f;  // sentinel in y: columns outside [n_begin, n_end) must keep it

struct Stats {
  int failures = 0;
  int checks = 0;
  double worst_vs_exact = 0;   // max |y - ref| / (sum |x w| + 1e-30)
  double worst_vs_float = 0;   // max |y - decode_dot| / (sum |x w| + 1e-30)
};

// Runs `kernel` on columns [n_begin, n_end) of a fresh y, checks every element of y, and returns y.
std::vector<float> CheckRange(const char* path, Kernel kernel, const Problem& p, const Reference& ref, int64_t n_begin,
                int64_t n_end, Stats& stats) {
  std::vector<float> y(p.M * p.N, kUntouched);
  kernel(p.x(), p.M, p.K, p.packed(), p.absmax(), kNf4, p.N, p.block_size, y.data(), n_begin, n_end);
  for (int64_t m = 0; m < p.M; ++m) {
    for (int64_t n = 0; n < p.N; ++n) {
      const int64_t e = m * p.N + n;
      ++stats.checks;
      if (n < n_begin || n >= n_end) {
        if (y[e] != kUntouched) {
          if (stats.failures++ < 10)
            std::printf("FAIL %s M=%lld N=%lld K=%lld bs=%lld: column %lld outside [%lld, %lld) was written\n", path,
                        (long long)p.M, (long long)p.N, (long long)p.K, (long long)p.block_size, (long long)n,
                        (long long)n_begin, (long long)n_end);
        }
        continue;
      }
      const double scale = ref.magnitude[e] + 1e-30;
      const double vs_exact = std::fabs(y[e] - ref.exact[e]) / scale;
      const double vs_float = std::fabs(static_cast<double>(y[e]) - ref.decode_dot[e]) / scale;
      stats.worst_vs_exact = std::max(stats.worst_vs_exact, vs_exact);
      stats.worst_vs_float = std::max(stats.worst_vs_float, vs_float);
      if (!(vs_exact <= kRelTol) || !(vs_float <= kRelTol)) {
        if (stats.failures++ < 10)
          std::printf("FAIL %s M=%lld N=%lld K=%lld bs=%lld m=%lld n=%lld: y=%.9g ref=%.9g decode-dot=%.9g\n", path,
                      (long long)p.M, (long long)p.N, (long long)p.K, (long long)p.block_size, (long long)m,
                      (long long)n, y[e], ref.exact[e], ref.decode_dot[e]);
      }
    }
  }
  return y;
}

// The whole of [0, N), then [0, N) in three uneven chunks (some empty when N is small), each on a fresh y. A chunk
// must give bit-for-bit what the whole range gave in its columns: how output features are split across threads
// (and grouped inside the kernel) must not change a result.
void CheckProblem(const char* path, Kernel kernel, const Problem& p, const Reference& ref, Stats& stats) {
  const std::vector<float> whole = CheckRange(path, kernel, p, ref, 0, p.N, stats);
  const int64_t cuts[] = {0, p.N / 5, (p.N * 3) / 4, p.N};
  for (int c = 0; c < 3; ++c) {
    const std::vector<float> part = CheckRange(path, kernel, p, ref, cuts[c], cuts[c + 1], stats);
    for (int64_t m = 0; m < p.M; ++m) {
      for (int64_t n = cuts[c]; n < cuts[c + 1]; ++n) {
        const int64_t e = m * p.N + n;
        if (part[e] != whole[e] && stats.failures++ < 10)
          std::printf("FAIL %s M=%lld N=%lld K=%lld bs=%lld m=%lld n=%lld: %.9g in [%lld, %lld), %.9g in the whole\n",
                      path, (long long)p.M, (long long)p.N, (long long)p.K, (long long)p.block_size, (long long)m,
                      (long long)n, part[e], (long long)cuts[c], (long long)cuts[c + 1], whole[e]);
      }
    }
  }
}

}  // namespace

int main() {
  struct Path {
    const char* name;
    Kernel kernel;
    bool available;
  };
  const Path paths[] = {
      {"dispatch", moka::MatMul4bitRows, true},
      {"scalar", moka::detail::MatMul4bitRowsScalar, true},
      {"avx2", moka::detail::MatMul4bitRowsAvx2, moka::detail::HasAvx2Fma()},
      {"avx512", moka::detail::MatMul4bitRowsAvx512, moka::detail::HasAvx512()},
  };
  constexpr int kPaths = sizeof paths / sizeof paths[0];
  const int64_t Ms[] = {1, 3, 6, 13, 17, 33};
  // K = 8208: a row of X beyond L1, where one row takes four output features per pass (6 = 4 + a tail of 2).
  const int64_t NKs[][2] = {{1, 64}, {5, 128}, {64, 4096}, {7, 96}, {3, 33}, {130, 64}, {4, 272}, {6, 8208}};
  const int64_t block_sizes[] = {64, 32, 2, 48};

  std::mt19937 rng(20261130);
  Stats total[kPaths];
  for (int64_t M : Ms) {
    for (const auto& nk : NKs) {
      for (int64_t bs : block_sizes) {
        const Problem p = MakeProblem(M, nk[0], nk[1], bs, rng);
        const Reference ref = MakeReference(p);
        for (int i = 0; i < kPaths; ++i) {
          if (paths[i].available) CheckProblem(paths[i].name, paths[i].kernel, p, ref, total[i]);
        }
      }
    }
  }

  int failures = 0;
  for (int i = 0; i < kPaths; ++i) {
    if (!paths[i].available) {
      std::printf("%-8s  skipped (not supported by this CPU or build)\n", paths[i].name);
      continue;
    }
    std::printf("%-8s  %7d checks  %d failures  max |y-ref|/sum|xw| = %.3g  max |y-decode_dot|/sum|xw| = %.3g\n",
                paths[i].name, total[i].checks, total[i].failures, total[i].worst_vs_exact, total[i].worst_vs_float);
    failures += total[i].failures;
  }
  std::printf("tolerance: |y - ref| <= %.0e * (sum_k |x*w| + 1e-30) per element\n", kRelTol);
  std::printf("%s\n", failures == 0 ? "PASS" : "FAIL");
  return failures == 0 ? 0 : 1;
}
