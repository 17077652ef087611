// ai.moka MatMul4bit: the ONNX Runtime custom op around MatMul4bitRows (matmul-4bit.h).
#pragma once
#include "ort-abi.h"

namespace moka {

// Domain and name under which sessions created by the addon know the op.
constexpr const char* kCustomOpDomain = "ai.moka";

// The op's definition (static; valid for the life of the process). `api` is kept for the kernels.
const ort::CustomOp* MatMul4bitOp(const ort::Api* api);

}  // namespace moka
