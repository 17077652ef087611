// The ai.moka 4-bit custom ops: MatMul4bit (around MatMul4bitRows) and Dequantize4bit (matmul-4bit.h).
#pragma once
#include "ort-abi.h"

namespace moka {

// Domain and name under which sessions created by the addon know the op.
constexpr const char* kCustomOpDomain = "ai.moka";

// The ops' definitions (static; valid for the life of the process). `api` is kept for the kernels.
const ort::CustomOp* MatMul4bitOp(const ort::Api* api);
const ort::CustomOp* Dequantize4bitOp(const ort::Api* api);

}  // namespace moka
