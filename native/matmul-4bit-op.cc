// The ai.moka 4-bit ops (opset 1) on a bitsandbytes-layout weight.
//
// MatMul4bit: Y = A · deq(B)ᵀ
//   inputs:  A      float32 [..., K]
//            B      uint8   [ceil(N·K/2)]      codes, high nibble first (as com.microsoft MatMulBnb4)
//            absmax float32 [ceil(N·K/block_size)]
//            code   float32 [16]               what each code decodes to (NF4: bitsandbytes' NormalFloat levels)
//   attrs:   K, N, block_size (ints)
//   output:  Y      float32 [..., N]
//
// Unlike MatMulBnb4 on the CPU provider, which decodes the whole weight to float32 for every product, this
// decodes one block at a time into registers and reuses it for every row of A: the kernel for token-by-token
// generation, where A has a handful of rows and the weight's decode dominated the time.
//
// Dequantize4bit: W = deq(B), float32 [N, K], for the products of many rows (an SGEMM follows) and the
// backward's dY · W. Inputs B, absmax, code and attributes as above, and an optional fourth input that is not
// read: the activation the product will use. It only orders the node — without it a decode depends on weights
// alone, and ONNX Runtime may run every layer's decode first and hold them all (measured: a 32-layer LLaMA-2-7B
// scoring batch peaked at 18.6 GB instead of ~5). It replaces MatMulBnb4's own decode (about
// 1 ns per weight on 2 threads) and the backward's Cast/Gather/Mul decode with one vectorized pass.
#include "matmul-4bit-op.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "matmul-4bit.h"
#include "parallel-for.h"

namespace moka {
namespace {

const ort::Api* g_api = nullptr;

struct Kernel {
  int64_t k = 0, n = 0, block_size = 0;
};

int64_t AttrInt(const ort::KernelInfo* info, const char* name) {
  int64_t v = 0;
  ort::Status* s = g_api->KernelInfoGetAttributeInt64(info, name, &v);
  if (s) {
    g_api->ReleaseStatus(s);
    return 0;
  }
  return v;
}

void* CreateKernel(const ort::CustomOp*, const void*, const ort::KernelInfo* info) {
  auto* kernel = new Kernel;
  kernel->k = AttrInt(info, "K");
  kernel->n = AttrInt(info, "N");
  kernel->block_size = AttrInt(info, "block_size");
  return kernel;
}

// Shape of a tensor value; false when it cannot be read.
bool ShapeOf(const ort::Value* v, int64_t* dims, size_t* rank) {
  ort::TensorTypeAndShapeInfo* info = nullptr;
  if (ort::Status* s = g_api->GetTensorTypeAndShape(v, &info)) {
    g_api->ReleaseStatus(s);
    return false;
  }
  bool ok = true;
  if (ort::Status* s = g_api->GetDimensionsCount(info, rank)) {
    g_api->ReleaseStatus(s);
    ok = false;
  } else if (*rank > 8) {
    ok = false;
  } else if (ort::Status* s2 = g_api->GetDimensions(info, dims, *rank)) {
    g_api->ReleaseStatus(s2);
    ok = false;
  }
  g_api->ReleaseTensorTypeAndShapeInfo(info);
  return ok;
}

template <typename T>
T* DataOf(const ort::Value* v) {
  void* p = nullptr;
  if (ort::Status* s = g_api->GetTensorMutableData(const_cast<ort::Value*>(v), &p)) {
    g_api->ReleaseStatus(s);
    return nullptr;
  }
  return static_cast<T*>(p);
}

// The kernel context's first `count` inputs; false when one cannot be read.
bool Inputs(ort::KernelContext* ctx, size_t count, const ort::Value** in) {
  for (size_t i = 0; i < count; i++) {
    if (ort::Status* s = g_api->KernelContextGetInput(ctx, i, &in[i])) {
      g_api->ReleaseStatus(s);
      return false;
    }
  }
  return true;
}

// A 1-D tensor of `length` elements.
bool IsVector(const ort::Value* v, int64_t length) {
  int64_t dims[8];
  size_t rank = 0;
  return ShapeOf(v, dims, &rank) && rank == 1 && dims[0] == length;
}

// The three buffers of a 4-bit weight (packed codes, block scales, the 16 levels).
struct Weight4bit {
  const uint8_t* packed = nullptr;
  const float* absmax = nullptr;
  const float* code = nullptr;
};

// The weight's buffers (inputs B, absmax, code), or false when they do not fit the kernel's attributes.
bool ReadWeight(const Kernel& kr, const ort::Value* b, const ort::Value* absmax, const ort::Value* code,
                Weight4bit* w) {
  const int64_t total = kr.n * kr.k;
  if (kr.k <= 0 || kr.n <= 0 || kr.block_size < 2 || kr.block_size % 2 != 0) return false;
  if (!IsVector(b, (total + 1) / 2) || !IsVector(absmax, (total + kr.block_size - 1) / kr.block_size) ||
      !IsVector(code, 16))
    return false;
  w->packed = DataOf<const uint8_t>(b);
  w->absmax = DataOf<const float>(absmax);
  w->code = DataOf<const float>(code);
  return w->packed && w->absmax && w->code;
}

// The version-13 kernel interface cannot report an error: a malformed call (which moka's graph emitter never
// makes; it checks shapes when it writes the node) yields NaN outputs rather than reading out of bounds.
void FillNaN(float* y, int64_t count) { std::fill(y, y + count, std::numeric_limits<float>::quiet_NaN()); }

void Compute(void* raw, ort::KernelContext* ctx) {
  const Kernel& kr = *static_cast<Kernel*>(raw);
  const ort::Value* in[4] = {};
  if (!Inputs(ctx, 4, in)) return;
  int64_t dims[8];
  size_t rank = 0;
  if (!ShapeOf(in[0], dims, &rank) || rank == 0) return;
  int64_t m = 1;
  for (size_t i = 0; i + 1 < rank; i++) m *= dims[i];
  const bool x_fits = dims[rank - 1] == kr.k;
  dims[rank - 1] = kr.n;
  ort::Value* out = nullptr;
  if (ort::Status* s = g_api->KernelContextGetOutput(ctx, 0, dims, rank, &out)) {
    g_api->ReleaseStatus(s);
    return;
  }
  float* y = DataOf<float>(out);
  const float* x = DataOf<const float>(in[0]);
  if (!y) return;
  Weight4bit w;
  if (!x_fits || !x || !ReadWeight(kr, in[1], in[2], in[3], &w)) {
    FillNaN(y, m * kr.n);
    return;
  }
  // Output features split across threads; each thread's columns are computed whole, so the result does not
  // depend on the thread count. The grain keeps a chunk's work well above the cost of waking a thread.
  const int64_t grain = std::max<int64_t>(16, 262144 / std::max<int64_t>(1, kr.k * m));
  ParallelFor(kr.n, grain, [&](int64_t begin, int64_t end) {
    MatMul4bitRows(x, m, kr.k, w.packed, w.absmax, w.code, kr.n, kr.block_size, y, begin, end);
  });
}

// Dequantize4bit: inputs B, absmax, code (the kernel context's inputs 0..2), output W [N, K].
void ComputeDequantize(void* raw, ort::KernelContext* ctx) {
  const Kernel& kr = *static_cast<Kernel*>(raw);
  const ort::Value* in[3] = {};
  if (!Inputs(ctx, 3, in)) return;
  const int64_t dims[2] = {kr.n, kr.k};
  ort::Value* out = nullptr;
  if (ort::Status* s = g_api->KernelContextGetOutput(ctx, 0, dims, 2, &out)) {
    g_api->ReleaseStatus(s);
    return;
  }
  float* out_w = DataOf<float>(out);
  if (!out_w) return;
  const int64_t total = kr.n * kr.k;
  Weight4bit w;
  if (!ReadWeight(kr, in[0], in[1], in[2], &w)) {
    FillNaN(out_w, total);
    return;
  }
  // Chunks of whole 16-code groups (the vector path's unit), 64 Ki weights each at least.
  constexpr int64_t kGrain = 1 << 16;
  const int64_t groups = (total + 15) / 16;
  ParallelFor(groups, kGrain / 16, [&](int64_t begin, int64_t end) {
    const int64_t i0 = begin * 16, i1 = std::min(total, end * 16);
    Dequantize4bit(w.packed, w.absmax, w.code, kr.block_size, i0, i1, out_w + i0);
  });
}

void Destroy(void* raw) { delete static_cast<Kernel*>(raw); }

const char* MatMulName(const ort::CustomOp*) { return "MatMul4bit"; }
const char* DequantizeName(const ort::CustomOp*) { return "Dequantize4bit"; }
const char* Provider(const ort::CustomOp*) { return "CPUExecutionProvider"; }
// MatMul4bit: A, B, absmax, code. Dequantize4bit: B, absmax, code, and the optional ordering input.
ort::ElementType MatMulInputType(const ort::CustomOp*, size_t i) { return i == 1 ? ort::kUint8 : ort::kFloat; }
size_t MatMulInputCount(const ort::CustomOp*) { return 4; }
ort::ElementType DequantizeInputType(const ort::CustomOp*, size_t i) {
  return i == 0 ? ort::kUint8 : ort::kFloat;
}
size_t DequantizeInputCount(const ort::CustomOp*) { return 4; }
ort::ElementType OutputType(const ort::CustomOp*, size_t) { return ort::kFloat; }
size_t OutputCount(const ort::CustomOp*) { return 1; }
// OrtCustomOpInputOutputCharacteristic: 0 required, 1 optional.
int Required(const ort::CustomOp*, size_t) { return 0; }
int OptionalAfterThree(const ort::CustomOp*, size_t i) { return i >= 3 ? 1 : 0; }
int DefaultMemory(const ort::CustomOp*, size_t) { return ort::kMemTypeDefault; }

}  // namespace

const ort::CustomOp* MatMul4bitOp(const ort::Api* api) {
  g_api = api;
  static const ort::CustomOp op = {
      ort::kApiVersion, CreateKernel,     MatMulName, Provider, MatMulInputType, MatMulInputCount, OutputType,
      OutputCount,      Compute,          Destroy,    Required, Required,        DefaultMemory,
  };
  return &op;
}

const ort::CustomOp* Dequantize4bitOp(const ort::Api* api) {
  g_api = api;
  static const ort::CustomOp op = {
      ort::kApiVersion, CreateKernel,      DequantizeName, Provider, DequantizeInputType, DequantizeInputCount,
      OutputType,       OutputCount,       ComputeDequantize, Destroy, OptionalAfterThree, Required,
      DefaultMemory,
  };
  return &op;
}

}  // namespace moka
