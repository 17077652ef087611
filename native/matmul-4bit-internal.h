// Entry points behind moka::MatMul4bitRows, exposed so the test and benchmark can reach each code path on one
// machine. Production callers use MatMul4bitRows (matmul-4bit.h), which picks the path at run time.
#pragma once
#include <cstdint>

namespace moka {
namespace detail {

// The portable path (plain C++, left to the compiler's auto-vectorizer): same contract as MatMul4bitRows.
void MatMul4bitRowsScalar(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* absmax,
                          const float* code, int64_t N, int64_t block_size, float* y, int64_t n_begin, int64_t n_end);

// True when this build has the AVX2+FMA path and the CPU running it supports it.
bool HasAvx2Fma();

// The AVX2+FMA path; call only when HasAvx2Fma(). Same contract as MatMul4bitRows.
void MatMul4bitRowsAvx2(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* absmax,
                        const float* code, int64_t N, int64_t block_size, float* y, int64_t n_begin, int64_t n_end);

// True when this build has the AVX-512 path and the CPU (and OS) support AVX-512F as well as AVX2+FMA.
bool HasAvx512();

// The AVX-512 path; call only when HasAvx512(). Same contract as MatMul4bitRows.
void MatMul4bitRowsAvx512(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* absmax,
                          const float* code, int64_t N, int64_t block_size, float* y, int64_t n_begin, int64_t n_end);

}  // namespace detail
}  // namespace moka
