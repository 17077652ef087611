// The slice of ONNX Runtime's C ABI (OrtApi, version 13) that moka's native sessions use, declared here so the
// addon builds without ONNX Runtime's headers (onnxruntime-node ships none).
//
// Source of the facts: ONNX Runtime's public C API, include/onnxruntime/core/session/onnxruntime_c_api.h
// (https://onnxruntime.ai/docs/api/c/struct_ort_api.html). OrtApi is a table of function pointers that only
// ever grows at its end (ORT's ABI promise), so a slot keeps its position in every later release: the
// positions below are those of API version 13 (ONNX Runtime 1.13) and hold for onnxruntime-node 1.30. The
// library is asked for version 13 (GetApi(13)), and OrtCustomOp is filled in its version-13 layout, which ORT
// keeps accepting (it reads the fields a custom op's `version` says it has).
#pragma once
#include <cstddef>
#include <cstdint>

namespace ort {

struct Status;
struct Env;
struct Session;
struct SessionOptions;
struct Value;
struct MemoryInfo;
struct TensorTypeAndShapeInfo;
struct CustomOpDomain;
struct KernelInfo;
struct KernelContext;
struct Allocator;
struct RunOptions;
struct ArenaCfg;

constexpr uint32_t kApiVersion = 13;

// ONNXTensorElementDataType (the same numbers as ONNX's TensorProto.DataType).
enum ElementType : int {
  kUndefined = 0,
  kFloat = 1,
  kUint8 = 2,
  kInt8 = 3,
  kUint16 = 4,
  kInt16 = 5,
  kInt32 = 6,
  kInt64 = 7,
  kString = 8,
  kBool = 9,
  kFloat16 = 10,
  kDouble = 11,
  kUint32 = 12,
  kUint64 = 13,
};

// OrtLoggingLevel, OrtAllocatorType, OrtMemType: the values used here.
constexpr int kLoggingError = 3;
constexpr int kDeviceAllocator = 0;
constexpr int kArenaAllocator = 1;
constexpr int kMemTypeDefault = 0;

// Positions of the OrtApi slots used (0-based index into the table of function pointers).
enum Slot : int {
  kGetErrorMessage = 2,
  kCreateEnv = 3,
  kCreateSession = 7,
  kCreateSessionFromArray = 8,
  kRun = 9,
  kCreateSessionOptions = 10,
  kSetOptimizedModelFilePath = 11,
  kEnableProfiling = 14,
  kEnableCpuMemArena = 18,
  kDisableCpuMemArena = 19,
  kDisableMemPattern = 17,
  kSetSessionLogSeverityLevel = 22,
  kSetSessionGraphOptimizationLevel = 23,
  kSetIntraOpNumThreads = 24,
  kCreateCustomOpDomain = 26,
  kCustomOpDomainAdd = 27,
  kAddCustomOpDomain = 28,
  kSessionGetInputCount = 30,
  kSessionGetOutputCount = 31,
  kSessionGetInputName = 36,
  kSessionGetOutputName = 37,
  kCreateTensorWithDataAsOrtValue = 49,
  kGetTensorMutableData = 51,
  kGetTensorElementType = 60,
  kGetDimensionsCount = 61,
  kGetDimensions = 62,
  kGetTensorTypeAndShape = 65,
  kCreateMemoryInfo = 68,
  kCreateCpuMemoryInfo = 69,
  kAllocatorFree = 76,
  kGetAllocatorWithDefaultOptions = 78,
  kKernelInfoGetAttributeInt64 = 86,
  kKernelContextGetInput = 90,
  kKernelContextGetOutput = 91,
  kReleaseStatus = 93,
  kReleaseMemoryInfo = 94,
  kReleaseSession = 95,
  kReleaseValue = 96,
  kReleaseTensorTypeAndShapeInfo = 99,
  kReleaseSessionOptions = 100,
  kAddSessionConfigEntry = 130,
  kCreateAndRegisterAllocator = 144,
  kAddInitializer = 150,
  kReleaseArenaCfg = 157,
  kCreateArenaCfgV2 = 164,
};

// OrtApiBase: {GetApi, GetVersionString}; the library exports OrtGetApiBase().
struct ApiBase {
  const void* const* (*GetApi)(uint32_t version) noexcept;
  const char* (*GetVersionString)() noexcept;
};
using GetApiBaseFn = const ApiBase* (*)() noexcept;

// OrtCustomOp, version-13 layout.
struct CustomOp {
  uint32_t version;
  void* (*CreateKernel)(const CustomOp* op, const void* api, const KernelInfo* info);
  const char* (*GetName)(const CustomOp* op);
  const char* (*GetExecutionProviderType)(const CustomOp* op);
  ElementType (*GetInputType)(const CustomOp* op, size_t index);
  size_t (*GetInputTypeCount)(const CustomOp* op);
  ElementType (*GetOutputType)(const CustomOp* op, size_t index);
  size_t (*GetOutputTypeCount)(const CustomOp* op);
  void (*KernelCompute)(void* kernel, KernelContext* context);
  void (*KernelDestroy)(void* kernel);
  int (*GetInputCharacteristic)(const CustomOp* op, size_t index);   // 0 = required
  int (*GetOutputCharacteristic)(const CustomOp* op, size_t index);  // 0 = required
  int (*GetInputMemoryType)(const CustomOp* op, size_t index);       // 0 = OrtMemTypeDefault
};

// Typed access to the table. Each wrapper names the slot's C signature once.
class Api {
 public:
  explicit Api(const void* const* table) : t_(table) {}

  const char* GetErrorMessage(const Status* s) const {
    return fn<const char* (*)(const Status*)>(kGetErrorMessage)(s);
  }
  Status* CreateEnv(int level, const char* logid, Env** out) const {
    return fn<Status* (*)(int, const char*, Env**)>(kCreateEnv)(level, logid, out);
  }
  Status* CreateSession(const Env* env, const char* path, const SessionOptions* o, Session** out) const {
    return fn<Status* (*)(const Env*, const char*, const SessionOptions*, Session**)>(kCreateSession)(env, path, o,
                                                                                                       out);
  }
  Status* CreateSessionFromArray(const Env* env, const void* data, size_t bytes, const SessionOptions* o,
                                 Session** out) const {
    using F = Status* (*)(const Env*, const void*, size_t, const SessionOptions*, Session**);
    return fn<F>(kCreateSessionFromArray)(env, data, bytes, o, out);
  }
  Status* Run(Session* s, const RunOptions* options, const char* const* in_names, const Value* const* in,
              size_t n_in, const char* const* out_names, size_t n_out, Value** out) const {
    using F = Status* (*)(Session*, const RunOptions*, const char* const*, const Value* const*, size_t,
                          const char* const*, size_t, Value**);
    return fn<F>(kRun)(s, options, in_names, in, n_in, out_names, n_out, out);
  }
  Status* CreateMemoryInfo(const char* name, int allocator_type, int id, int mem_type, MemoryInfo** out) const {
    return fn<Status* (*)(const char*, int, int, int, MemoryInfo**)>(kCreateMemoryInfo)(name, allocator_type, id,
                                                                                        mem_type, out);
  }
  Status* CreateArenaCfgV2(const char* const* keys, const size_t* values, size_t n, ArenaCfg** out) const {
    using F = Status* (*)(const char* const*, const size_t*, size_t, ArenaCfg**);
    return fn<F>(kCreateArenaCfgV2)(keys, values, n, out);
  }
  void ReleaseArenaCfg(ArenaCfg* c) const { fn<void (*)(ArenaCfg*)>(kReleaseArenaCfg)(c); }
  Status* CreateAndRegisterAllocator(Env* env, const MemoryInfo* info, const ArenaCfg* cfg) const {
    using F = Status* (*)(Env*, const MemoryInfo*, const ArenaCfg*);
    return fn<F>(kCreateAndRegisterAllocator)(env, info, cfg);
  }
  Status* CreateSessionOptions(SessionOptions** out) const {
    return fn<Status* (*)(SessionOptions**)>(kCreateSessionOptions)(out);
  }
  Status* SetOptimizedModelFilePath(SessionOptions* o, const char* path) const {
    return fn<Status* (*)(SessionOptions*, const char*)>(kSetOptimizedModelFilePath)(o, path);
  }
  Status* EnableProfiling(SessionOptions* o, const char* prefix) const {
    return fn<Status* (*)(SessionOptions*, const char*)>(kEnableProfiling)(o, prefix);
  }
  Status* SetCpuMemArena(SessionOptions* o, bool on) const {
    return fn<Status* (*)(SessionOptions*)>(on ? kEnableCpuMemArena : kDisableCpuMemArena)(o);
  }
  Status* DisableMemPattern(SessionOptions* o) const {
    return fn<Status* (*)(SessionOptions*)>(kDisableMemPattern)(o);
  }
  Status* SetSessionLogSeverityLevel(SessionOptions* o, int level) const {
    return fn<Status* (*)(SessionOptions*, int)>(kSetSessionLogSeverityLevel)(o, level);
  }
  Status* SetSessionGraphOptimizationLevel(SessionOptions* o, int level) const {
    return fn<Status* (*)(SessionOptions*, int)>(kSetSessionGraphOptimizationLevel)(o, level);
  }
  Status* SetIntraOpNumThreads(SessionOptions* o, int n) const {
    return fn<Status* (*)(SessionOptions*, int)>(kSetIntraOpNumThreads)(o, n);
  }
  Status* CreateCustomOpDomain(const char* domain, CustomOpDomain** out) const {
    return fn<Status* (*)(const char*, CustomOpDomain**)>(kCreateCustomOpDomain)(domain, out);
  }
  Status* CustomOpDomainAdd(CustomOpDomain* d, const CustomOp* op) const {
    return fn<Status* (*)(CustomOpDomain*, const CustomOp*)>(kCustomOpDomainAdd)(d, op);
  }
  Status* AddCustomOpDomain(SessionOptions* o, CustomOpDomain* d) const {
    return fn<Status* (*)(SessionOptions*, CustomOpDomain*)>(kAddCustomOpDomain)(o, d);
  }
  Status* SessionGetInputCount(const Session* s, size_t* out) const {
    return fn<Status* (*)(const Session*, size_t*)>(kSessionGetInputCount)(s, out);
  }
  Status* SessionGetOutputCount(const Session* s, size_t* out) const {
    return fn<Status* (*)(const Session*, size_t*)>(kSessionGetOutputCount)(s, out);
  }
  Status* SessionGetInputName(const Session* s, size_t i, Allocator* a, char** out) const {
    return fn<Status* (*)(const Session*, size_t, Allocator*, char**)>(kSessionGetInputName)(s, i, a, out);
  }
  Status* SessionGetOutputName(const Session* s, size_t i, Allocator* a, char** out) const {
    return fn<Status* (*)(const Session*, size_t, Allocator*, char**)>(kSessionGetOutputName)(s, i, a, out);
  }
  Status* CreateTensorWithDataAsOrtValue(const MemoryInfo* info, void* data, size_t bytes, const int64_t* shape,
                                         size_t rank, ElementType type, Value** out) const {
    using F = Status* (*)(const MemoryInfo*, void*, size_t, const int64_t*, size_t, ElementType, Value**);
    return fn<F>(kCreateTensorWithDataAsOrtValue)(info, data, bytes, shape, rank, type, out);
  }
  Status* GetTensorMutableData(Value* v, void** out) const {
    return fn<Status* (*)(Value*, void**)>(kGetTensorMutableData)(v, out);
  }
  Status* GetTensorElementType(const TensorTypeAndShapeInfo* i, ElementType* out) const {
    return fn<Status* (*)(const TensorTypeAndShapeInfo*, ElementType*)>(kGetTensorElementType)(i, out);
  }
  Status* GetDimensionsCount(const TensorTypeAndShapeInfo* i, size_t* out) const {
    return fn<Status* (*)(const TensorTypeAndShapeInfo*, size_t*)>(kGetDimensionsCount)(i, out);
  }
  Status* GetDimensions(const TensorTypeAndShapeInfo* i, int64_t* dims, size_t n) const {
    return fn<Status* (*)(const TensorTypeAndShapeInfo*, int64_t*, size_t)>(kGetDimensions)(i, dims, n);
  }
  Status* GetTensorTypeAndShape(const Value* v, TensorTypeAndShapeInfo** out) const {
    return fn<Status* (*)(const Value*, TensorTypeAndShapeInfo**)>(kGetTensorTypeAndShape)(v, out);
  }
  Status* CreateCpuMemoryInfo(MemoryInfo** out) const {
    return fn<Status* (*)(int, int, MemoryInfo**)>(kCreateCpuMemoryInfo)(kDeviceAllocator, kMemTypeDefault, out);
  }
  Status* AllocatorFree(Allocator* a, void* p) const {
    return fn<Status* (*)(Allocator*, void*)>(kAllocatorFree)(a, p);
  }
  Status* GetAllocatorWithDefaultOptions(Allocator** out) const {
    return fn<Status* (*)(Allocator**)>(kGetAllocatorWithDefaultOptions)(out);
  }
  Status* KernelInfoGetAttributeInt64(const KernelInfo* i, const char* name, int64_t* out) const {
    return fn<Status* (*)(const KernelInfo*, const char*, int64_t*)>(kKernelInfoGetAttributeInt64)(i, name, out);
  }
  Status* KernelContextGetInput(const KernelContext* c, size_t i, const Value** out) const {
    return fn<Status* (*)(const KernelContext*, size_t, const Value**)>(kKernelContextGetInput)(c, i, out);
  }
  Status* KernelContextGetOutput(KernelContext* c, size_t i, const int64_t* dims, size_t n, Value** out) const {
    using F = Status* (*)(KernelContext*, size_t, const int64_t*, size_t, Value**);
    return fn<F>(kKernelContextGetOutput)(c, i, dims, n, out);
  }
  void ReleaseStatus(Status* s) const { fn<void (*)(Status*)>(kReleaseStatus)(s); }
  void ReleaseMemoryInfo(MemoryInfo* m) const { fn<void (*)(MemoryInfo*)>(kReleaseMemoryInfo)(m); }
  void ReleaseSession(Session* s) const { fn<void (*)(Session*)>(kReleaseSession)(s); }
  void ReleaseValue(Value* v) const { fn<void (*)(Value*)>(kReleaseValue)(v); }
  void ReleaseTensorTypeAndShapeInfo(TensorTypeAndShapeInfo* i) const {
    fn<void (*)(TensorTypeAndShapeInfo*)>(kReleaseTensorTypeAndShapeInfo)(i);
  }
  void ReleaseSessionOptions(SessionOptions* o) const { fn<void (*)(SessionOptions*)>(kReleaseSessionOptions)(o); }
  // The value (and the memory it points to) must outlive every session created with these options.
  Status* AddInitializer(SessionOptions* o, const char* name, const Value* value) const {
    return fn<Status* (*)(SessionOptions*, const char*, const Value*)>(kAddInitializer)(o, name, value);
  }
  Status* AddSessionConfigEntry(SessionOptions* o, const char* key, const char* value) const {
    return fn<Status* (*)(SessionOptions*, const char*, const char*)>(kAddSessionConfigEntry)(o, key, value);
  }

 private:
  template <typename F>
  F fn(Slot slot) const {
    return reinterpret_cast<F>(const_cast<void*>(t_[slot]));
  }
  const void* const* t_;
};

}  // namespace ort
