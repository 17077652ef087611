// CPU kernel of ai.moka MatMul4bit: Y = X · Wᵀ with W kept in bitsandbytes' packed 4-bit form (NF4 or FP4).
//
// ONNX Runtime's MatMulBnb4 decodes all of W to float32 for every product; in token-by-token generation (M = 1..32)
// that decode, not the arithmetic, is the cost. Here W is read once per call in packed form and decoded a group of
// 16 codes at a time, either straight into the registers that feed the FMAs (up to kFusedRowsMax rows of X) or into
// a kChunk-float stack buffer that every row of X reads before the next chunk is decoded (more rows): W never exists
// as floats beyond that.
//
// Paths:
//   fast    K % 16 == 0 and block_size % 16 == 0 (LLaMA weights with block_size 64): a row of W starts on a byte
//           boundary and every group of 16 codes (8 bytes) shares one absmax, so groups decode with vector lookups.
//           On x86-64, chosen at run time: AVX-512F (16-lane lookups; tiles above kFusedRowsMax rows use AVX2),
//           else AVX2+FMA, else portable C++ (also what other architectures build). A single row longer than L1
//           (K >= kL1RowFloats) takes several output features per pass over it (four with AVX-512, two with AVX2).
//   general anything else (K odd, block_size 2..14 or not a multiple of 16): a plain loop over flat indices.
//
// Rounding: a weight is formed as the float product code[q] * absmax, exactly as a float32 decode would form it;
// only the order of the float additions in the dot product differs from decode-then-dot.
#include "matmul-4bit.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "matmul-4bit-internal.h"

// The vector paths need GCC or Clang (target attributes, __builtin_cpu_supports); other compilers and other
// architectures build the portable path only. So does MOKA_MATMUL4BIT_NO_AVX2, which the test uses to check that
// build on x86-64.
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(MOKA_MATMUL4BIT_NO_AVX2)
#include <immintrin.h>
#define MOKA_HAVE_AVX2_PATH 1
#define MOKA_AVX2 __attribute__((target("avx2,fma")))
#define MOKA_AVX512 __attribute__((target("avx2,fma,avx512f")))
#else
#define MOKA_HAVE_AVX2_PATH 0
#endif

namespace moka {
namespace {

constexpr int64_t kGroup = 16;    // codes decoded together: 8 packed bytes, always inside one block on the fast path
constexpr int64_t kChunk = 256;   // weights of one row decoded at a time (1 KiB): stays in L1 while X's rows read it
constexpr int64_t kRowTile = 32;  // rows of X whose running sums are held at once (generation has M <= 32)
constexpr int kLanes = 8;         // partial sums per row of X: one AVX register, or what the auto-vectorizer needs
// Up to this many rows of X, the vector paths decode W straight into registers, once per eight rows; above it, into
// a chunk buffer that a 4-row x 2-column register tile reads (less traffic from X per weight; measured faster at 32).
constexpr int64_t kFusedRowsMax = 16;
// A row of X of this many floats (32 KiB, a common L1 data cache) or more no longer stays in L1 across output
// features: a single row then takes four features per pass (AVX-512, FusedTileAvx512) or two (AVX2,
// FusedTileAvx2; its 16 registers hold no more).
constexpr int64_t kL1RowFloats = 8192;

bool FastPathApplies(int64_t K, int64_t block_size) { return K % kGroup == 0 && block_size % kGroup == 0; }

// Follows the absmax block along a run of flat indices one group at a time, so the hot loop does no division.
struct BlockCursor {
  int64_t block;
  int64_t offset;  // position of the current group inside the block
  int64_t block_size;
  BlockCursor(int64_t flat_index, int64_t block_size_)
      : block(flat_index / block_size_), offset(flat_index % block_size_), block_size(block_size_) {}
  void NextGroup() {
    offset += kGroup;
    if (offset == block_size) {
      offset = 0;
      ++block;
    }
  }
};

// ---- general path ----------------------------------------------------------------------------------------------

// Code of flat index i: even i in the high nibble of byte i / 2, odd i in the low nibble (bitsandbytes' order).
inline int CodeAt(const uint8_t* packed, int64_t i) {
  const uint8_t byte = packed[i >> 1];
  return (i & 1) ? (byte & 0x0f) : (byte >> 4);
}

// Any shape the fast path cannot take. Slow (a division per weight) but only odd shapes land here; the sum is kept
// in double, which costs nothing that matters here and only tightens the result.
void GeneralRows(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* absmax, const float* code,
                 int64_t N, int64_t block_size, float* y, int64_t n_begin, int64_t n_end) {
  for (int64_t n = n_begin; n < n_end; ++n) {
    for (int64_t m = 0; m < M; ++m) {
      double sum = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t i = n * K + k;
        const float w = code[CodeAt(packed, i)] * absmax[i / block_size];
        sum += static_cast<double>(x[m * K + k]) * w;
      }
      y[m * N + n] = static_cast<float>(sum);
    }
  }
}

// ---- portable fast path ----------------------------------------------------------------------------------------

// Decodes `count` weights (a multiple of kGroup) starting at flat index i0 (a multiple of kGroup) into w.
void DecodeChunkScalar(const uint8_t* packed, const float* absmax, const float* code, int64_t block_size,
                       int64_t i0, int64_t count, float* w) {
  BlockCursor cursor(i0, block_size);
  const uint8_t* p = packed + i0 / 2;
  for (int64_t g = 0; g < count; g += kGroup, p += kGroup / 2, cursor.NextGroup()) {
    const float scale = absmax[cursor.block];
    for (int j = 0; j < kGroup / 2; ++j) {
      w[g + 2 * j] = code[p[j] >> 4] * scale;
      w[g + 2 * j + 1] = code[p[j] & 0x0f] * scale;
    }
  }
}

// acc[r * kLanes + l] += sum over j ≡ l (mod kLanes) of x[r, j] * w[j]. Lane-wise sums let the compiler vectorize
// without being allowed to reassociate float additions.
void DotChunkScalar(const float* x, int64_t K, int64_t rows, const float* w, int64_t count, float* acc) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * K;
    float* a = acc + r * kLanes;
    for (int64_t j = 0; j < count; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) a[l] += xr[j + l] * w[j + l];
    }
  }
}

float LaneSum(const float* a) { return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])); }

void FastRowsScalar(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* absmax,
                    const float* code, int64_t N, int64_t block_size, float* y, int64_t n_begin, int64_t n_end) {
  alignas(32) float w[kChunk];
  alignas(32) float acc[kRowTile * kLanes];
  for (int64_t m0 = 0; m0 < M; m0 += kRowTile) {
    const int64_t rows = std::min(kRowTile, M - m0);
    for (int64_t n = n_begin; n < n_end; ++n) {
      std::fill(acc, acc + rows * kLanes, 0.0f);
      for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
        const int64_t count = std::min(kChunk, K - k0);
        DecodeChunkScalar(packed, absmax, code, block_size, n * K + k0, count, w);
        DotChunkScalar(x + m0 * K + k0, K, rows, w, count, acc);
      }
      for (int64_t r = 0; r < rows; ++r) y[(m0 + r) * N + n] = LaneSum(acc + r * kLanes);
    }
  }
}

// ---- AVX2 + FMA fast path --------------------------------------------------------------------------------------

#if MOKA_HAVE_AVX2_PATH

// Covers `rows` rows of X with tiles of 8, 4, 3, 2 and 1 rows (the sizes the fused kernels are instantiated for),
// calling tile(R, first_row) with R a std::integral_constant. The vector paths pass lambdas that carry their own
// target attribute (a lambda does not inherit its function's), and this is always inlined into them, so each
// tile's kernel can be inlined as if called directly (without, the AVX2 path ran 5% slower on 4 and 12 rows).
template <typename Tile>
__attribute__((always_inline)) inline void ForEachRowTile(int64_t rows, Tile&& tile) {
  int64_t r = 0;
  for (; r + 8 <= rows; r += 8) tile(std::integral_constant<int, 8>{}, r);
  if (r + 4 <= rows) {
    tile(std::integral_constant<int, 4>{}, r);
    r += 4;
  }
  switch (rows - r) {
    case 3: tile(std::integral_constant<int, 3>{}, r); break;
    case 2: tile(std::integral_constant<int, 2>{}, r); break;
    case 1: tile(std::integral_constant<int, 1>{}, r); break;
    default: break;
  }
}

// Eight weights from four packed bytes. The bytes are broadcast to every 32-bit lane (a load, not a shuffle) and
// lane l shifts its own nibble down: vpermps reads only the low 3 bits of each index, so no mask is needed, and a
// left shift puts the nibble's bit 3 in the sign bit, where blendv picks the high table. Each table register holds
// 8 of the 16 levels already scaled by the block's absmax. Shuffle-port work: two vpermps per 8 weights.
MOKA_AVX2 inline __m256 DecodeEight(const uint8_t* p, __m256 low_levels, __m256 high_levels) {
  // Flat order in little-endian bytes: element 2j is the high nibble of byte j (bits 8j+4..8j+7), 2j+1 the low.
  const __m256i to_index = _mm256_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24);
  const __m256i to_sign = _mm256_setr_epi32(24, 28, 16, 20, 8, 12, 0, 4);  // 28 - to_index
  int32_t four;
  std::memcpy(&four, p, sizeof four);
  const __m256i bytes = _mm256_set1_epi32(four);
  const __m256i index = _mm256_srlv_epi32(bytes, to_index);
  const __m256 from_low = _mm256_permutevar8x32_ps(low_levels, index);
  const __m256 from_high = _mm256_permutevar8x32_ps(high_levels, index);
  return _mm256_blendv_ps(from_low, from_high, _mm256_castsi256_ps(_mm256_sllv_epi32(bytes, to_sign)));
}

// Same contract as DecodeChunkScalar, and bit-for-bit the same weights (one float multiply each).
MOKA_AVX2 void DecodeChunkAvx2(const uint8_t* packed, const float* absmax, const float* code, int64_t block_size,
                               int64_t i0, int64_t count, float* w) {
  const __m256 code_low = _mm256_loadu_ps(code);
  const __m256 code_high = _mm256_loadu_ps(code + 8);
  BlockCursor cursor(i0, block_size);
  int64_t scaled_block = -1;
  __m256 low_levels = code_low, high_levels = code_high;
  const uint8_t* p = packed + i0 / 2;
  for (int64_t g = 0; g < count; g += kGroup, p += kGroup / 2, cursor.NextGroup()) {
    if (cursor.block != scaled_block) {  // scale the 16 levels once per block, not each weight
      const __m256 scale = _mm256_broadcast_ss(absmax + cursor.block);
      low_levels = _mm256_mul_ps(code_low, scale);
      high_levels = _mm256_mul_ps(code_high, scale);
      scaled_block = cursor.block;
    }
    // Unaligned stores (no slower on aligned addresses): Dequantize4bit writes into ONNX Runtime's output.
    _mm256_storeu_ps(w + g, DecodeEight(p, low_levels, high_levels));
    _mm256_storeu_ps(w + g + 8, DecodeEight(p + 4, low_levels, high_levels));
  }
}

// acc[r * C + c] += x[r, 0..count) · w[c] for R rows of X and C columns of W at once (a register tile): each
// loaded x register feeds C FMAs and each w register R, so loads stay below the FMA rate, and S independent chains
// per (r, c) keep enough FMAs in flight to hide their latency without spilling the 16 ymm registers. S depends on
// R only: a column is summed the same way whether it is paired (C = 2) or alone (C = 1, the odd one out of a
// thread's range), so a result does not depend on how columns are split across threads.
template <int R, int C>
MOKA_AVX2 void DotTileAvx2(const float* x, int64_t K, const float* w, int64_t count, __m256* acc) {
  constexpr int S = R <= 2 ? 2 : 1;
  __m256 sum[S][R * C];
  for (int rc = 0; rc < R * C; ++rc) {
    sum[0][rc] = acc[rc];
    for (int s = 1; s < S; ++s) sum[s][rc] = _mm256_setzero_ps();
  }
  for (int64_t j = 0; j < count; j += 8 * S) {
    for (int s = 0; s < S; ++s) {
      __m256 wv[C];
      for (int c = 0; c < C; ++c) wv[c] = _mm256_load_ps(w + c * kChunk + j + 8 * s);
      for (int r = 0; r < R; ++r) {
        const __m256 xv = _mm256_loadu_ps(x + r * K + j + 8 * s);
        for (int c = 0; c < C; ++c) sum[s][r * C + c] = _mm256_fmadd_ps(xv, wv[c], sum[s][r * C + c]);
      }
    }
  }
  for (int rc = 0; rc < R * C; ++rc) {
    acc[rc] = sum[0][rc];
    for (int s = 1; s < S; ++s) acc[rc] = _mm256_add_ps(acc[rc], sum[s][rc]);
  }
}

// All `rows` rows of X against the C decoded columns in w, four rows at a time.
template <int C>
MOKA_AVX2 void DotChunkAvx2(const float* x, int64_t K, int64_t rows, const float* w, int64_t count, __m256* acc) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) DotTileAvx2<4, C>(x + r * K, K, w, count, acc + r * C);
  switch (rows - r) {
    case 3: DotTileAvx2<3, C>(x + r * K, K, w, count, acc + r * C); break;
    case 2: DotTileAvx2<2, C>(x + r * K, K, w, count, acc + r * C); break;
    case 1: DotTileAvx2<1, C>(x + r * K, K, w, count, acc + r * C); break;
    default: break;
  }
}

MOKA_AVX2 float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// Output features n .. n+C-1 for `rows` rows of X (already offset to the tile's first row): decode a chunk of
// each of the C rows of W, run every row of X over them, repeat along K.
template <int C>
MOKA_AVX2 void ColumnsAvx2(const float* x, int64_t rows, int64_t K, const uint8_t* packed, const float* absmax,
                           const float* code, int64_t N, int64_t block_size, float* y, int64_t n) {
  alignas(32) float w[C * kChunk];
  __m256 acc[kRowTile * C];
  for (int64_t rc = 0; rc < rows * C; ++rc) acc[rc] = _mm256_setzero_ps();
  for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
    const int64_t count = std::min(kChunk, K - k0);
    for (int c = 0; c < C; ++c)
      DecodeChunkAvx2(packed, absmax, code, block_size, (n + c) * K + k0, count, w + c * kChunk);
    DotChunkAvx2<C>(x + k0, K, rows, w, count, acc);
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int c = 0; c < C; ++c) y[r * N + n + c] = HorizontalSum(acc[r * C + c]);
}

// Output features n .. n+C-1 for R <= 8 rows of X, decoding straight into registers: skipping a buffer saves a
// store and a load per 8 weights, which is most of the cost when few rows share each decoded weight.
// y[r * N + n + c] for r < R, c < C. S chains per (row, feature): two while R <= 4, so that even R = 1 keeps enough
// FMAs in flight; one at R = 8 (registers). C = 2 serves one row longer than L1 holds (K >= kL1RowFloats): each
// loaded x vector then feeds both features' FMAs, and the row is read once per two features (one thread,
// 11008 -> 4096: 4.0 -> 3.1 ms; at K = 4096 one feature per pass stays faster). Each (row, feature) sums in the
// same order for every C, so results do not depend on how features are grouped.
template <int R, int C>
MOKA_AVX2 void FusedTileAvx2(const float* x, int64_t K, const uint8_t* packed, const float* absmax,
                             const float* code, int64_t N, int64_t block_size, float* y, int64_t n) {
  constexpr int S = R <= 4 ? 2 : 1;
  __m256 acc[S][R][C];
  for (int s = 0; s < S; ++s)
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[s][r][c] = _mm256_setzero_ps();
  const __m256 code_low = _mm256_loadu_ps(code);
  const __m256 code_high = _mm256_loadu_ps(code + 8);
  // Per feature, the 16 levels scaled by the current block's absmax; rescaled when k reaches the next block (the
  // first block may start before the row does when blocks straddle rows). One loop, so the accumulators stay in
  // registers.
  int64_t block[C], next_block_k[C];
  __m256 low_levels[C], high_levels[C];
  const uint8_t* p[C];
  for (int c = 0; c < C; ++c) {
    const int64_t start = (n + c) * K;
    block[c] = start / block_size;
    next_block_k[c] = block_size - start % block_size;
    const __m256 scale = _mm256_broadcast_ss(absmax + block[c]);
    low_levels[c] = _mm256_mul_ps(code_low, scale);
    high_levels[c] = _mm256_mul_ps(code_high, scale);
    p[c] = packed + start / 2;
  }
  for (int64_t k = 0; k < K; k += kGroup) {
    __m256 w0[C], w1[C];
    for (int c = 0; c < C; ++c) {
      if (k == next_block_k[c]) {
        next_block_k[c] += block_size;
        const __m256 scale = _mm256_broadcast_ss(absmax + ++block[c]);
        low_levels[c] = _mm256_mul_ps(code_low, scale);
        high_levels[c] = _mm256_mul_ps(code_high, scale);
      }
      w0[c] = DecodeEight(p[c], low_levels[c], high_levels[c]);
      w1[c] = DecodeEight(p[c] + 4, low_levels[c], high_levels[c]);
      p[c] += kGroup / 2;
    }
    for (int r = 0; r < R; ++r) {
      const __m256 x0 = _mm256_loadu_ps(x + r * K + k), x1 = _mm256_loadu_ps(x + r * K + k + 8);
      for (int c = 0; c < C; ++c) {
        acc[0][r][c] = _mm256_fmadd_ps(x0, w0[c], acc[0][r][c]);
        acc[S - 1][r][c] = _mm256_fmadd_ps(x1, w1[c], acc[S - 1][r][c]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c)
      y[r * N + n + c] =
          HorizontalSum(S == 2 ? _mm256_add_ps(acc[0][r][c], acc[S - 1][r][c]) : acc[0][r][c]);
}

// Output feature n for all `rows` rows of X, eight rows (eight FMA chains) per pass over the packed row.
MOKA_AVX2 void FusedColumnAvx2(const float* x, int64_t rows, int64_t K, const uint8_t* packed, const float* absmax,
                               const float* code, int64_t N, int64_t block_size, float* y, int64_t n) {
  ForEachRowTile(rows, [&](auto R, int64_t r) MOKA_AVX2 {
    FusedTileAvx2<R(), 1>(x + r * K, K, packed, absmax, code, N, block_size, y + r * N, n);
  });
}

MOKA_AVX2 void FastRowsAvx2(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* absmax,
                            const float* code, int64_t N, int64_t block_size, float* y, int64_t n_begin,
                            int64_t n_end) {
  for (int64_t m0 = 0; m0 < M; m0 += kRowTile) {
    const int64_t rows = std::min(kRowTile, M - m0);
    const float* xt = x + m0 * K;
    float* yt = y + m0 * N;
    if (rows <= kFusedRowsMax) {
      int64_t n = n_begin;
      if (rows == 1 && K >= kL1RowFloats) {
        for (; n + 2 <= n_end; n += 2) FusedTileAvx2<1, 2>(xt, K, packed, absmax, code, N, block_size, yt, n);
      }
      for (; n < n_end; ++n) FusedColumnAvx2(xt, rows, K, packed, absmax, code, N, block_size, yt, n);
      continue;
    }
    int64_t n = n_begin;
    for (; n + 2 <= n_end; n += 2) ColumnsAvx2<2>(xt, rows, K, packed, absmax, code, N, block_size, yt, n);
    if (n < n_end) ColumnsAvx2<1>(xt, rows, K, packed, absmax, code, N, block_size, yt, n);
  }
}

// ---- AVX-512 fused path (same scheme as the AVX2 fused rows, 16 lanes) ----------------------------------------

// GCC 12 reports its own AVX-512 intrinsics (their _mm512_undefined_* pass-through operand) as "maybe used
// uninitialized" once inlined here (GCC bug 105593); the warning is about the header, not this code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
//
// One vpermps over a zmm holds all 16 scaled levels, so a group of 16 weights costs one dword spread (a shuffle),
// one variable shift and one lookup, against four lookups and two blends in AVX2.

// Sixteen weights from eight packed bytes: dword 0 (bytes 0..3) goes to lanes 0..7, dword 1 to lanes 8..15, and
// each lane shifts its own nibble down; vpermps reads only the low 4 bits of the index.
MOKA_AVX512 inline __m512 DecodeSixteen(const uint8_t* p, __m512 levels) {
  const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const __m512i to_index = _mm512_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24, 4, 0, 12, 8, 20, 16, 28, 24);
  const __m128i eight = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m512i bytes = _mm512_permutexvar_epi32(spread, _mm512_castsi128_si512(eight));
  return _mm512_permutexvar_ps(_mm512_srlv_epi32(bytes, to_index), levels);
}

// The 16 levels scaled by the absmax of the block that holds group k (groups arrive in order).
MOKA_AVX512 inline void NextBlockAt(int64_t k, int64_t block_size, const float* absmax, __m512 code16,
                                    int64_t& block, int64_t& next_block_k, __m512& levels) {
  if (k == next_block_k) {
    next_block_k += block_size;
    levels = _mm512_mul_ps(code16, _mm512_set1_ps(absmax[++block]));
  }
}

// Output features n .. n+C-1 for R <= 8 rows of X; two accumulator chains per (row, feature): even and odd groups
// of 16. With C > 1 each loaded x vector feeds C FMAs: one feature at a time, a single row of X is read again for
// every feature, from L2 once the row outgrows L1 (K = 11008: 44 KB against 5.5 KB of packed weights). Each
// (row, feature) sums in the same order for every R and C, so results do not depend on how they are grouped.
template <int R, int C>
MOKA_AVX512 void FusedTileAvx512(const float* x, int64_t K, const uint8_t* packed, const float* absmax,
                                 const float* code, int64_t N, int64_t block_size, float* y, int64_t n) {
  __m512 even[R][C], odd[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) even[r][c] = odd[r][c] = _mm512_setzero_ps();
  const __m512 code16 = _mm512_loadu_ps(code);
  int64_t block[C], next_block_k[C];
  __m512 levels[C];
  const uint8_t* p[C];
  for (int c = 0; c < C; ++c) {
    const int64_t start = (n + c) * K;
    block[c] = start / block_size;
    next_block_k[c] = block_size - start % block_size;
    levels[c] = _mm512_mul_ps(code16, _mm512_set1_ps(absmax[block[c]]));
    p[c] = packed + start / 2;
  }
  int64_t k = 0;
  for (; k + 2 * kGroup <= K; k += 2 * kGroup) {
    __m512 w0[C], w1[C];
    for (int c = 0; c < C; ++c) {
      NextBlockAt(k, block_size, absmax, code16, block[c], next_block_k[c], levels[c]);
      w0[c] = DecodeSixteen(p[c] + k / 2, levels[c]);
      NextBlockAt(k + kGroup, block_size, absmax, code16, block[c], next_block_k[c], levels[c]);
      w1[c] = DecodeSixteen(p[c] + (k + kGroup) / 2, levels[c]);
    }
    for (int r = 0; r < R; ++r) {
      const __m512 x0 = _mm512_loadu_ps(x + r * K + k), x1 = _mm512_loadu_ps(x + r * K + k + kGroup);
      for (int c = 0; c < C; ++c) {
        even[r][c] = _mm512_fmadd_ps(x0, w0[c], even[r][c]);
        odd[r][c] = _mm512_fmadd_ps(x1, w1[c], odd[r][c]);
      }
    }
  }
  if (k < K) {  // K is an odd number of groups
    for (int c = 0; c < C; ++c) {
      NextBlockAt(k, block_size, absmax, code16, block[c], next_block_k[c], levels[c]);
      const __m512 w0 = DecodeSixteen(p[c] + k / 2, levels[c]);
      for (int r = 0; r < R; ++r) even[r][c] = _mm512_fmadd_ps(_mm512_loadu_ps(x + r * K + k), w0, even[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) y[r * N + n + c] = _mm512_reduce_add_ps(_mm512_add_ps(even[r][c], odd[r][c]));
}

MOKA_AVX512 void FusedColumnAvx512(const float* x, int64_t rows, int64_t K, const uint8_t* packed,
                                   const float* absmax, const float* code, int64_t N, int64_t block_size, float* y,
                                   int64_t n) {
  ForEachRowTile(rows, [&](auto R, int64_t r) MOKA_AVX512 {
    FusedTileAvx512<R(), 1>(x + r * K, K, packed, absmax, code, N, block_size, y + r * N, n);
  });
}

// Tiles of more than kFusedRowsMax rows keep the AVX2 buffered path.
MOKA_AVX512 void FastRowsAvx512(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* absmax,
                                const float* code, int64_t N, int64_t block_size, float* y, int64_t n_begin,
                                int64_t n_end) {
  for (int64_t m0 = 0; m0 < M; m0 += kRowTile) {
    const int64_t rows = std::min(kRowTile, M - m0);
    if (rows > kFusedRowsMax) {
      FastRowsAvx2(x + m0 * K, rows, K, packed, absmax, code, N, block_size, y + m0 * N, n_begin, n_end);
      continue;
    }
    const float* xt = x + m0 * K;
    float* yt = y + m0 * N;
    int64_t n = n_begin;
    // One row (generation) longer than L1 holds: four features per pass over it (registers allow no more).
    // Measured at one row: 11008 -> 4096 took 2.4 ms instead of 3.3; at K = 4096, where the row stays in L1,
    // two or four features per pass were slower (1.06 and 1.15 ms against 0.85), hence the threshold.
    if (rows == 1 && K >= kL1RowFloats) {
      for (; n + 4 <= n_end; n += 4) FusedTileAvx512<1, 4>(xt, K, packed, absmax, code, N, block_size, yt, n);
    }
    for (; n < n_end; ++n) FusedColumnAvx512(xt, rows, K, packed, absmax, code, N, block_size, yt, n);
  }
}
#pragma GCC diagnostic pop

#endif  // MOKA_HAVE_AVX2_PATH

}  // namespace

namespace detail {

void MatMul4bitRowsScalar(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* absmax,
                          const float* code, int64_t N, int64_t block_size, float* y, int64_t n_begin, int64_t n_end) {
  if (FastPathApplies(K, block_size)) {
    FastRowsScalar(x, M, K, packed, absmax, code, N, block_size, y, n_begin, n_end);
  } else {
    GeneralRows(x, M, K, packed, absmax, code, N, block_size, y, n_begin, n_end);
  }
}

bool HasAvx2Fma() {
#if MOKA_HAVE_AVX2_PATH
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

bool HasAvx512() {
#if MOKA_HAVE_AVX2_PATH
  static const bool has = [] {
    __builtin_cpu_init();
    return HasAvx2Fma() && __builtin_cpu_supports("avx512f");
  }();
  return has;
#else
  return false;
#endif
}

void MatMul4bitRowsAvx512(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* absmax,
                          const float* code, int64_t N, int64_t block_size, float* y, int64_t n_begin, int64_t n_end) {
#if MOKA_HAVE_AVX2_PATH
  if (FastPathApplies(K, block_size)) {
    FastRowsAvx512(x, M, K, packed, absmax, code, N, block_size, y, n_begin, n_end);
    return;
  }
#endif
  MatMul4bitRowsScalar(x, M, K, packed, absmax, code, N, block_size, y, n_begin, n_end);
}

void MatMul4bitRowsAvx2(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* absmax,
                        const float* code, int64_t N, int64_t block_size, float* y, int64_t n_begin, int64_t n_end) {
#if MOKA_HAVE_AVX2_PATH
  if (FastPathApplies(K, block_size)) {
    FastRowsAvx2(x, M, K, packed, absmax, code, N, block_size, y, n_begin, n_end);
    return;
  }
#endif
  // No AVX2 build, or a shape only the general path takes.
  MatMul4bitRowsScalar(x, M, K, packed, absmax, code, N, block_size, y, n_begin, n_end);
}

}  // namespace detail

void Dequantize4bit(const uint8_t* packed, const float* absmax, const float* code, int64_t block_size,
                    int64_t i_begin, int64_t i_end, float* w) {
  int64_t i = i_begin;
  // Vector groups: 16 codes starting on a multiple of 16 share one absmax when the block is a multiple of 16.
  if (block_size % kGroup == 0 && i % kGroup == 0) {
    const int64_t groups_end = i + (i_end - i) / kGroup * kGroup;
    for (int64_t i0 = i; i0 < groups_end; i0 += kChunk) {
      const int64_t count = std::min(kChunk, groups_end - i0);
#if MOKA_HAVE_AVX2_PATH
      if (detail::HasAvx2Fma()) {
        DecodeChunkAvx2(packed, absmax, code, block_size, i0, count, w + (i0 - i_begin));
        continue;
      }
#endif
      DecodeChunkScalar(packed, absmax, code, block_size, i0, count, w + (i0 - i_begin));
    }
    i = groups_end;
  }
  for (; i < i_end; ++i) w[i - i_begin] = code[CodeAt(packed, i)] * absmax[i / block_size];
}

void MatMul4bitRows(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* absmax,
                    const float* code, int64_t N, int64_t block_size, float* y, int64_t n_begin, int64_t n_end) {
  if (detail::HasAvx512()) {
    detail::MatMul4bitRowsAvx512(x, M, K, packed, absmax, code, N, block_size, y, n_begin, n_end);
  } else if (detail::HasAvx2Fma()) {
    detail::MatMul4bitRowsAvx2(x, M, K, packed, absmax, code, N, block_size, y, n_begin, n_end);
  } else {
    detail::MatMul4bitRowsScalar(x, M, K, packed, absmax, code, N, block_size, y, n_begin, n_end);
  }
}

}  // namespace moka
