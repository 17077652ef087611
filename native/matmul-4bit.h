// The 4-bit lookup-table matrix product behind moka's NF4 generation kernel (ai.moka MatMul4bit).
//
// Layout: bitsandbytes' 4-bit format, as consumed by ONNX Runtime's com.microsoft MatMulBnb4 and written by
// bitsandbytes.functional.quantize_4bit: the logical weight W is [N, K] (out features, in features), flattened
// row-major (i = n * K + k); code i sits in byte i / 2, high nibble for even i, low nibble for odd i; each run of
// block_size consecutive flat values shares one float32 scale absmax[i / block_size]. A code q decodes to
// code[q] * absmax (NF4: bitsandbytes' 16 NormalFloat levels; FP4 or any other 16-entry table works the same).
#pragma once
#include <cstdint>

namespace moka {

// Y[m, n] = sum_k X[m, k] * code[q(n, k)] * absmax[(n * K + k) / block_size], for every m in [0, M) and the
// output features n in [n_begin, n_end) only (the caller splits N across threads).
//   x:      float32 [M, K], row-major
//   packed: uint8 [ceil(N * K / 2)]
//   absmax: float32 [ceil(N * K / block_size)]
//   code:   float32 [16]
//   y:      float32 [M, N], row-major (only columns n_begin..n_end-1 are written)
// Requires block_size >= 2 and even. Any M, N, K >= 1 (K odd, or K not a multiple of block_size, take a slower path).
void MatMul4bitRows(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* absmax,
                    const float* code, int64_t N, int64_t block_size, float* y, int64_t n_begin, int64_t n_end);

// W[i] = code[q(i)] * absmax[i / block_size] for the flat indices i in [i_begin, i_end) of the weight, written to
// w[0 .. i_end - i_begin): the float32 decode of a bitsandbytes 4-bit weight (what bitsandbytes'
// dequantize_4bit computes), for the products no fused kernel covers (many rows, the backward's dY · W).
// Each value is the float32 product code[q] * absmax, bit for bit what a scalar decode gives.
void Dequantize4bit(const uint8_t* packed, const float* absmax, const float* code, int64_t block_size,
                    int64_t i_begin, int64_t i_end, float* w);

}  // namespace moka
