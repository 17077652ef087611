// moka's native addon: ONNX Runtime sessions that know moka's custom ops (ai.moka MatMul4bit, Dequantize4bit).
//
// onnxruntime-node cannot register custom ops, so sessions whose graph uses one are created here, through the
// C API of the very ONNX Runtime library onnxruntime-node loaded (same process, same OrtEnv). The JavaScript
// side (lib/engine/native-session.ts) wraps these calls in the shape of an onnxruntime-node InferenceSession.
//
//   load(ortLibraryPath) → ORT version string
//   createSession(modelPath | modelBytes: Uint8Array, options) → Promise<{ session, inputNames, outputNames }>
//   run(session, inputNames, inputs: [elementType, dims, TypedArray][], outputNames)
//       → Promise<[elementType, dims, ArrayBuffer][]>
//   release(session)
//   memorySettings() → { memReuseOff } (memory-settings.cc; false until loaded)
// createSession's options may name initializers to read from weight files mapped once per process
// (sharedInitializers; shared-weights.cc).
// Errors reject (or throw) with ONNX Runtime's message.
#include <dlfcn.h>
#include <node_api.h>

#include <cstring>
#include <string>
#include <vector>

#include "matmul-4bit-op.h"
#include "memory-settings.h"
#include "shared-weights.h"
#include "ort-abi.h"

namespace {

const ort::Api* g_api = nullptr;
ort::Env* g_env = nullptr;
ort::CustomOpDomain* g_domain = nullptr;
ort::MemoryInfo* g_cpu = nullptr;
// The shared CPU arena (registered on the OrtEnv): what sessions of large models use instead of a per-session
// arena or none (see RegisterSharedArena).
bool g_shared_arena = false;
// Whether ORT's planner buffer reuse can be turned off (memory-settings.cc; reported by memorySettings()).
bool g_mem_reuse_switch = false;

// Weights a session reads from a mapping shared with the addon's other sessions (shared-weights.cc): the tensors
// over it, and the files mapped for them. They must outlive the session.
struct SharedWeights {
  std::vector<ort::Value*> values;
  std::vector<std::string> files;
};

void ReleaseSharedWeights(SharedWeights* w) {
  for (ort::Value* v : w->values) g_api->ReleaseValue(v);
  for (const std::string& f : w->files) moka::UnmapWeightFile(f);
  w->values.clear();
  w->files.clear();
}

// A session and the shared weights it reads.
struct Handle {
  ort::Session* session;
  SharedWeights weights;
};

// napi_* calls fail only on misuse (wrong value types, which the JS wrapper prevents); a failure throws a JS
// error with the call's text, and the binding returns.
#define NAPI_OK(call)                                           \
  do {                                                          \
    if ((call) != napi_ok) {                                    \
      napi_throw_error(env, nullptr, "moka native: " #call);    \
      return nullptr;                                           \
    }                                                           \
  } while (0)

// Takes the message out of an OrtStatus (and releases it); "" for success.
std::string Take(ort::Status* s) {
  if (!s) return "";
  std::string msg = g_api->GetErrorMessage(s);
  g_api->ReleaseStatus(s);
  return msg.empty() ? "ONNX Runtime failed without a message" : msg;
}

std::string StringArg(napi_env env, napi_value v) {
  size_t len = 0;
  napi_get_value_string_utf8(env, v, nullptr, 0, &len);
  std::string s(len, '\0');
  napi_get_value_string_utf8(env, v, s.data(), len + 1, &len);
  return s;
}

std::vector<napi_value> Args(napi_env env, napi_callback_info info, size_t n) {
  std::vector<napi_value> args(n);
  size_t argc = n;
  napi_get_cb_info(env, info, &argc, args.data(), nullptr, nullptr);
  return args;
}

napi_value StringArray(napi_env env, const std::vector<std::string>& xs) {
  napi_value arr;
  napi_create_array_with_length(env, xs.size(), &arr);
  for (size_t i = 0; i < xs.size(); i++) {
    napi_value s;
    napi_create_string_utf8(env, xs[i].c_str(), xs[i].size(), &s);
    napi_set_element(env, arr, i, s);
  }
  return arr;
}

// Without an arena, every large tensor a run allocates (a decoded 4-bit weight: 64–180 MB on LLaMA-2-7B) is a
// fresh mmap whose pages fault in one by one; ORT's default per-session arena avoids that but grows by powers
// of two and never gives memory back (measured: a training step's peak rose from 3.7 to 4.6–7.7 GB over runs).
// So large models' sessions share one arena that grows by what is asked (arena_extend_strategy 1,
// kSameAsRequested): a freed weight's pages are reused by the next. It keeps its pages between runs. Shrinking
// it after each run (memory.enable_memory_arena_shrinkage; moka did until issue #11's last change) made every
// training step fault its buffers in again (0.1–0.6 s a step), and the regions it freed went back to glibc,
// whose heaps keep blocks of up to 32 MiB: a 1-layer LLaMA-2-7B step grew by ~290 MB per run (2398 → 2751 →
// 3051 MB). With the planner's reuse off (memory-settings.cc) it lowered no peak either: 1, 2 and 4 layers at
// 1 × 512 tokens peaked at 2140 / 2287 / 2561 MB with it, 2170 / 2303 / 2575 without (glibc's mmap threshold
// fixed in both). Best effort: when the registration fails, those sessions run without an arena.
void RegisterSharedArena() {
  const char* keys[] = {"arena_extend_strategy"};
  const size_t values[] = {1};
  ort::ArenaCfg* cfg = nullptr;
  ort::MemoryInfo* info = nullptr;
  std::string err = Take(g_api->CreateArenaCfgV2(keys, values, 1, &cfg));
  if (err.empty())
    err = Take(g_api->CreateMemoryInfo("Cpu", ort::kArenaAllocator, 0, ort::kMemTypeDefault, &info));
  if (err.empty()) err = Take(g_api->CreateAndRegisterAllocator(g_env, info, cfg));
  if (info) g_api->ReleaseMemoryInfo(info);
  if (cfg) g_api->ReleaseArenaCfg(cfg);
  g_shared_arena = err.empty();
}

napi_value Load(napi_env env, napi_callback_info info) {
  auto args = Args(env, info, 1);
  static const char* version = nullptr;  // set once loaded; later calls (other worker threads) return it
  if (g_api) {
    napi_value v;
    NAPI_OK(napi_create_string_utf8(env, version, NAPI_AUTO_LENGTH, &v));
    return v;
  }
  const std::string path = StringArg(env, args[0]);
  // The library onnxruntime-node already loaded: dlopen returns the same handle, so the OrtEnv is shared.
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!lib) {
    napi_throw_error(env, nullptr, (std::string("cannot load ONNX Runtime: ") + dlerror()).c_str());
    return nullptr;
  }
  auto get_base = reinterpret_cast<ort::GetApiBaseFn>(dlsym(lib, "OrtGetApiBase"));
  const ort::ApiBase* base = get_base ? get_base() : nullptr;
  const void* const* table = base ? base->GetApi(ort::kApiVersion) : nullptr;
  if (!table) {
    napi_throw_error(env, nullptr, "this ONNX Runtime does not offer C API version 13");
    return nullptr;
  }
  static ort::Api api(table);
  g_api = &api;
  std::string err = Take(g_api->CreateEnv(ort::kLoggingError, "moka", &g_env));
  if (err.empty()) err = Take(g_api->CreateCpuMemoryInfo(&g_cpu));
  if (err.empty()) err = Take(g_api->CreateCustomOpDomain(moka::kCustomOpDomain, &g_domain));
  if (err.empty()) err = Take(g_api->CustomOpDomainAdd(g_domain, moka::MatMul4bitOp(g_api)));
  if (err.empty()) err = Take(g_api->CustomOpDomainAdd(g_domain, moka::Dequantize4bitOp(g_api)));
  if (!err.empty()) {
    g_api = nullptr;
    napi_throw_error(env, nullptr, err.c_str());
    return nullptr;
  }
  RegisterSharedArena();
  g_mem_reuse_switch = moka::FindMemReuseSwitch(g_api);
  version = base->GetVersionString();
  napi_value v;
  NAPI_OK(napi_create_string_utf8(env, version, NAPI_AUTO_LENGTH, &v));
  return v;
}

// ---- createSession ------------------------------------------------------------------------------------------

struct CreateJob {
  napi_async_work work = nullptr;
  napi_deferred deferred = nullptr;
  std::string path, optimized_path, profile_prefix, error;
  // A model given as bytes instead of a path (kept alive by `model_ref` until the session is created).
  const void* model_bytes = nullptr;
  size_t model_length = 0;
  napi_ref model_ref = nullptr;
  int threads = 0, optimization = 99, log_severity = 4;
  int mem_arena = 1;  // 0 none, 1 the session's own, 2 the shared arena
  bool mem_reuse = false;  // ORT's planner buffer reuse (off unless asked; memory-settings.cc)
  std::vector<std::pair<std::string, std::string>> config;
  // Initializers to read from shared mappings instead of the model's external data (sharedInitializers).
  struct SharedInitializer {
    std::string name, file;
    int64_t offset = 0, length = 0;
    int element_type = 0;
    std::vector<int64_t> dims;
  };
  std::vector<SharedInitializer> shared;
  SharedWeights weights;  // what `shared` became; handed to the session's Handle
  ort::Session* session = nullptr;
  std::vector<std::string> input_names, output_names;
};

std::vector<std::string> Names(ort::Session* s, bool inputs, std::string* error) {
  size_t n = 0;
  *error = Take(inputs ? g_api->SessionGetInputCount(s, &n) : g_api->SessionGetOutputCount(s, &n));
  ort::Allocator* alloc = nullptr;
  if (error->empty()) *error = Take(g_api->GetAllocatorWithDefaultOptions(&alloc));
  std::vector<std::string> names;
  for (size_t i = 0; i < n && error->empty(); i++) {
    char* name = nullptr;
    *error = Take(inputs ? g_api->SessionGetInputName(s, i, alloc, &name)
                         : g_api->SessionGetOutputName(s, i, alloc, &name));
    if (name) {
      names.emplace_back(name);
      Take(g_api->AllocatorFree(alloc, name));
    }
  }
  return names;
}

// Maps the files of job->shared and adds a tensor over each initializer's bytes to `opts`.
std::string AddSharedInitializers(CreateJob* job, ort::SessionOptions* opts) {
  for (const auto& init : job->shared) {
    int64_t size = 0;
    std::string err;
    const char* base = moka::MapWeightFile(init.file, &size, &err);
    if (!base) return err;
    job->weights.files.push_back(init.file);
    if (init.offset < 0 || init.length < 0 || init.offset + init.length > size)
      return "initializer " + init.name + ": bytes [" + std::to_string(init.offset) + ", +" +
             std::to_string(init.length) + ") lie outside " + init.file;
    ort::Value* value = nullptr;
    err = Take(g_api->CreateTensorWithDataAsOrtValue(g_cpu, const_cast<char*>(base) + init.offset,
                                                     static_cast<size_t>(init.length), init.dims.data(),
                                                     init.dims.size(), static_cast<ort::ElementType>(init.element_type),
                                                     &value));
    if (!err.empty()) return "initializer " + init.name + ": " + err;
    job->weights.values.push_back(value);
    err = Take(g_api->AddInitializer(opts, init.name.c_str(), value));
    if (!err.empty()) return "initializer " + init.name + ": " + err;
  }
  return "";
}

void CreateExecute(napi_env, void* data) {
  auto* job = static_cast<CreateJob*>(data);
  ort::SessionOptions* opts = nullptr;
  std::string& err = job->error;
  err = Take(g_api->CreateSessionOptions(&opts));
  if (err.empty()) err = Take(g_api->AddCustomOpDomain(opts, g_domain));
  if (err.empty() && job->threads > 0) err = Take(g_api->SetIntraOpNumThreads(opts, job->threads));
  if (err.empty()) err = Take(g_api->SetSessionGraphOptimizationLevel(opts, job->optimization));
  if (err.empty()) err = Take(g_api->SetSessionLogSeverityLevel(opts, job->log_severity));
  const bool shared = job->mem_arena == 2 && g_shared_arena;
  if (err.empty()) err = Take(g_api->SetCpuMemArena(opts, job->mem_arena == 1));
  if (err.empty() && shared) err = Take(g_api->AddSessionConfigEntry(opts, "session.use_env_allocators", "1"));
  if (err.empty()) err = Take(g_api->DisableMemPattern(opts));
  if (err.empty() && !job->mem_reuse) moka::DisableMemReuse(opts);  // best effort: see memory-settings.cc
  if (err.empty()) err = AddSharedInitializers(job, opts);
  if (err.empty() && !job->optimized_path.empty())
    err = Take(g_api->SetOptimizedModelFilePath(opts, job->optimized_path.c_str()));
  if (err.empty() && !job->profile_prefix.empty())
    err = Take(g_api->EnableProfiling(opts, job->profile_prefix.c_str()));
  for (auto& [k, v] : job->config)
    if (err.empty()) err = Take(g_api->AddSessionConfigEntry(opts, k.c_str(), v.c_str()));
  if (err.empty()) {
    err = Take(job->model_bytes
                   ? g_api->CreateSessionFromArray(g_env, job->model_bytes, job->model_length, opts, &job->session)
                   : g_api->CreateSession(g_env, job->path.c_str(), opts, &job->session));
  }
  if (opts) g_api->ReleaseSessionOptions(opts);
  if (err.empty()) job->input_names = Names(job->session, true, &err);
  if (err.empty()) job->output_names = Names(job->session, false, &err);
  if (!err.empty() && job->session) {
    g_api->ReleaseSession(job->session);
    job->session = nullptr;
  }
  if (!err.empty()) ReleaseSharedWeights(&job->weights);  // no session reads them
}

void Reject(napi_env env, napi_deferred deferred, const std::string& message) {
  napi_value msg, error;
  napi_create_string_utf8(env, message.c_str(), message.size(), &msg);
  napi_create_error(env, nullptr, msg, &error);
  napi_reject_deferred(env, deferred, error);
}

void CreateComplete(napi_env env, napi_status, void* data) {
  auto* job = static_cast<CreateJob*>(data);
  if (!job->error.empty()) {
    Reject(env, job->deferred, job->error);
  } else {
    napi_value result, handle;
    napi_create_object(env, &result);
    auto* h = new Handle{job->session, std::move(job->weights)};
    napi_create_external(env, h, nullptr, nullptr, &handle);
    napi_set_named_property(env, result, "session", handle);
    napi_set_named_property(env, result, "inputNames", StringArray(env, job->input_names));
    napi_set_named_property(env, result, "outputNames", StringArray(env, job->output_names));
    napi_resolve_deferred(env, job->deferred, result);
  }
  if (job->model_ref) napi_delete_reference(env, job->model_ref);
  napi_delete_async_work(env, job->work);
  delete job;
}

napi_value Property(napi_env env, napi_value obj, const char* name) {
  napi_value v = nullptr;
  bool has = false;
  napi_has_named_property(env, obj, name, &has);
  if (has) napi_get_named_property(env, obj, name, &v);
  return v;
}

// A whole number property beyond int range (byte offsets in multi-GB files); -1 when absent.
int64_t Int64Property(napi_env env, napi_value obj, const char* name) {
  napi_value v = Property(env, obj, name);
  int64_t out = -1;
  if (v) napi_get_value_int64(env, v, &out);
  return out;
}

int IntProperty(napi_env env, napi_value obj, const char* name, int fallback) {
  napi_value v = Property(env, obj, name);
  int32_t out = fallback;
  if (v && napi_get_value_int32(env, v, &out) != napi_ok) return fallback;
  return out;
}

// [{ name, file, offset, length, elementType, dims }] (NativeSessionOptions.sharedInitializers).
std::vector<CreateJob::SharedInitializer> SharedInitializers(napi_env env, napi_value list) {
  std::vector<CreateJob::SharedInitializer> out;
  uint32_t n = 0;
  napi_get_array_length(env, list, &n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    napi_get_element(env, list, i, &e);
    CreateJob::SharedInitializer init;
    init.name = StringArg(env, Property(env, e, "name"));
    init.file = StringArg(env, Property(env, e, "file"));
    init.offset = Int64Property(env, e, "offset");
    init.length = Int64Property(env, e, "length");
    init.element_type = IntProperty(env, e, "elementType", 0);
    napi_value dims = Property(env, e, "dims");
    uint32_t rank = 0;
    napi_get_array_length(env, dims, &rank);
    for (uint32_t j = 0; j < rank; j++) {
      napi_value d;
      napi_get_element(env, dims, j, &d);
      int64_t v = 0;
      napi_get_value_int64(env, d, &v);
      init.dims.push_back(v);
    }
    out.push_back(std::move(init));
  }
  return out;
}

napi_value CreateSession(napi_env env, napi_callback_info info) {
  auto args = Args(env, info, 2);
  if (!g_api) {
    napi_throw_error(env, nullptr, "moka native: load() first");
    return nullptr;
  }
  auto* job = new CreateJob;
  bool is_bytes = false;
  napi_is_typedarray(env, args[0], &is_bytes);
  if (is_bytes) {
    napi_typedarray_type kind;
    napi_value ab;
    size_t offset = 0;
    NAPI_OK(napi_get_typedarray_info(env, args[0], &kind, &job->model_length, const_cast<void**>(&job->model_bytes),
                                     &ab, &offset));
    NAPI_OK(napi_create_reference(env, args[0], 1, &job->model_ref));
  } else {
    job->path = StringArg(env, args[0]);
  }
  napi_value o = args[1];
  job->threads = IntProperty(env, o, "intraOpThreads", 0);
  job->optimization = IntProperty(env, o, "graphOptimizationLevel", 99);
  job->log_severity = IntProperty(env, o, "logSeverityLevel", 4);
  job->mem_arena = IntProperty(env, o, "memArena", 1);
  job->mem_reuse = IntProperty(env, o, "memReuse", 0) != 0;
  if (napi_value list = Property(env, o, "sharedInitializers")) job->shared = SharedInitializers(env, list);
  if (napi_value p = Property(env, o, "optimizedModelPath")) job->optimized_path = StringArg(env, p);
  if (napi_value p = Property(env, o, "profileFilePrefix")) job->profile_prefix = StringArg(env, p);
  if (napi_value cfg = Property(env, o, "config")) {
    uint32_t n = 0;
    napi_get_array_length(env, cfg, &n);
    for (uint32_t i = 0; i < n; i++) {
      napi_value pair, k, v;
      napi_get_element(env, cfg, i, &pair);
      napi_get_element(env, pair, 0, &k);
      napi_get_element(env, pair, 1, &v);
      job->config.emplace_back(StringArg(env, k), StringArg(env, v));
    }
  }
  napi_value promise, name;
  NAPI_OK(napi_create_promise(env, &job->deferred, &promise));
  NAPI_OK(napi_create_string_utf8(env, "moka.createSession", NAPI_AUTO_LENGTH, &name));
  NAPI_OK(napi_create_async_work(env, nullptr, name, CreateExecute, CreateComplete, job, &job->work));
  NAPI_OK(napi_queue_async_work(env, job->work));
  return promise;
}

// ---- run ----------------------------------------------------------------------------------------------------

size_t ElementBytes(int type) {
  switch (type) {
    case ort::kFloat: case ort::kInt32: case ort::kUint32: return 4;
    case ort::kUint8: case ort::kInt8: case ort::kBool: return 1;
    case ort::kUint16: case ort::kInt16: case ort::kFloat16: return 2;
    case ort::kInt64: case ort::kUint64: case ort::kDouble: return 8;
    default: return 0;
  }
}

struct RunJob {
  napi_async_work work = nullptr;
  napi_deferred deferred = nullptr;
  ort::Session* session = nullptr;
  std::vector<std::string> input_names, output_names;
  std::vector<ort::Value*> inputs;
  std::vector<napi_ref> keep_alive;  // the input arrays whose memory the input values point into
  std::vector<ort::Value*> outputs;
  std::string error;
};

void RunExecute(napi_env, void* data) {
  auto* job = static_cast<RunJob*>(data);
  std::vector<const char*> in_names, out_names;
  for (auto& n : job->input_names) in_names.push_back(n.c_str());
  for (auto& n : job->output_names) out_names.push_back(n.c_str());
  job->outputs.assign(out_names.size(), nullptr);
  job->error = Take(g_api->Run(job->session, nullptr, in_names.data(), job->inputs.data(), in_names.size(),
                               out_names.data(), out_names.size(), job->outputs.data()));
}

// One output value as [elementType, dims, ArrayBuffer] (a copy: the value is released right after).
napi_value OutputToJs(napi_env env, ort::Value* value, std::string* error) {
  ort::TensorTypeAndShapeInfo* info = nullptr;
  *error = Take(g_api->GetTensorTypeAndShape(value, &info));
  if (!error->empty()) return nullptr;
  ort::ElementType type = ort::kUndefined;
  size_t rank = 0;
  *error = Take(g_api->GetTensorElementType(info, &type));
  if (error->empty()) *error = Take(g_api->GetDimensionsCount(info, &rank));
  std::vector<int64_t> dims(rank);
  if (error->empty() && rank) *error = Take(g_api->GetDimensions(info, dims.data(), rank));
  g_api->ReleaseTensorTypeAndShapeInfo(info);
  if (!error->empty()) return nullptr;
  if (ElementBytes(type) == 0) {
    *error = "output of element type " + std::to_string(type) + " cannot be returned to JavaScript";
    return nullptr;
  }
  size_t count = 1;
  for (int64_t d : dims) count *= static_cast<size_t>(d);
  void* src = nullptr;
  *error = Take(g_api->GetTensorMutableData(value, &src));
  if (!error->empty()) return nullptr;
  napi_value buffer, js_dims, triple, t;
  void* dst = nullptr;
  napi_create_arraybuffer(env, count * ElementBytes(type), &dst, &buffer);
  if (count) std::memcpy(dst, src, count * ElementBytes(type));
  napi_create_array_with_length(env, rank, &js_dims);
  for (size_t i = 0; i < rank; i++) {
    napi_value d;
    napi_create_double(env, static_cast<double>(dims[i]), &d);
    napi_set_element(env, js_dims, i, d);
  }
  napi_create_int32(env, type, &t);
  napi_create_array_with_length(env, 3, &triple);
  napi_set_element(env, triple, 0, t);
  napi_set_element(env, triple, 1, js_dims);
  napi_set_element(env, triple, 2, buffer);
  return triple;
}

void ReleaseRunJob(napi_env env, RunJob* job) {
  for (ort::Value* v : job->inputs) g_api->ReleaseValue(v);
  for (ort::Value* v : job->outputs)
    if (v) g_api->ReleaseValue(v);
  for (napi_ref r : job->keep_alive) napi_delete_reference(env, r);
  if (job->work) napi_delete_async_work(env, job->work);
  delete job;
}

void RunComplete(napi_env env, napi_status, void* data) {
  auto* job = static_cast<RunJob*>(data);
  if (job->error.empty()) {
    napi_value result;
    napi_create_array_with_length(env, job->outputs.size(), &result);
    for (size_t i = 0; i < job->outputs.size() && job->error.empty(); i++) {
      napi_value out = OutputToJs(env, job->outputs[i], &job->error);
      if (out) napi_set_element(env, result, i, out);
    }
    if (job->error.empty()) napi_resolve_deferred(env, job->deferred, result);
  }
  if (!job->error.empty()) Reject(env, job->deferred, job->error);
  ReleaseRunJob(env, job);
}

std::vector<std::string> StringList(napi_env env, napi_value arr) {
  uint32_t n = 0;
  napi_get_array_length(env, arr, &n);
  std::vector<std::string> out;
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    napi_get_element(env, arr, i, &v);
    out.push_back(StringArg(env, v));
  }
  return out;
}

// Builds the OrtValue of one [elementType, dims, TypedArray] input over the array's own memory.
std::string InputValue(napi_env env, napi_value triple, RunJob* job) {
  napi_value t, js_dims, array;
  napi_get_element(env, triple, 0, &t);
  napi_get_element(env, triple, 1, &js_dims);
  napi_get_element(env, triple, 2, &array);
  int32_t type = 0;
  napi_get_value_int32(env, t, &type);
  uint32_t rank = 0;
  napi_get_array_length(env, js_dims, &rank);
  std::vector<int64_t> dims(rank);
  size_t count = 1;
  for (uint32_t i = 0; i < rank; i++) {
    napi_value d;
    double x = 0;
    napi_get_element(env, js_dims, i, &d);
    napi_get_value_double(env, d, &x);
    dims[i] = static_cast<int64_t>(x);
    count *= static_cast<size_t>(dims[i]);
  }
  napi_typedarray_type kind;
  size_t length = 0, offset = 0;
  void* data = nullptr;
  napi_value ab;
  if (napi_get_typedarray_info(env, array, &kind, &length, &data, &ab, &offset) != napi_ok)
    return "an input is not a typed array";
  const size_t bytes = count * ElementBytes(type);
  if (ElementBytes(type) == 0) return "input element type " + std::to_string(type) + " is not supported";
  napi_ref ref;
  napi_create_reference(env, array, 1, &ref);
  job->keep_alive.push_back(ref);
  // A zero-size tensor still needs a valid pointer.
  static uint64_t empty = 0;
  ort::Value* value = nullptr;
  std::string err = Take(g_api->CreateTensorWithDataAsOrtValue(g_cpu, bytes ? data : &empty, bytes, dims.data(),
                                                               rank, static_cast<ort::ElementType>(type), &value));
  if (err.empty()) job->inputs.push_back(value);
  return err;
}

napi_value Run(napi_env env, napi_callback_info info) {
  auto args = Args(env, info, 4);
  auto* job = new RunJob;
  void* handle = nullptr;
  napi_get_value_external(env, args[0], &handle);
  if (auto* h = static_cast<Handle*>(handle)) job->session = h->session;
  job->input_names = StringList(env, args[1]);
  job->output_names = StringList(env, args[3]);
  napi_value promise;
  NAPI_OK(napi_create_promise(env, &job->deferred, &promise));
  uint32_t n = 0;
  napi_get_array_length(env, args[2], &n);
  std::string err = job->session ? "" : "the session was released";
  for (uint32_t i = 0; i < n && err.empty(); i++) {
    napi_value triple;
    napi_get_element(env, args[2], i, &triple);
    err = InputValue(env, triple, job);
  }
  if (!err.empty()) {
    Reject(env, job->deferred, err);
    ReleaseRunJob(env, job);
    return promise;
  }
  napi_value name;
  NAPI_OK(napi_create_string_utf8(env, "moka.run", NAPI_AUTO_LENGTH, &name));
  NAPI_OK(napi_create_async_work(env, nullptr, name, RunExecute, RunComplete, job, &job->work));
  NAPI_OK(napi_queue_async_work(env, job->work));
  return promise;
}

napi_value Release(napi_env env, napi_callback_info info) {
  auto args = Args(env, info, 1);
  void* handle = nullptr;
  napi_get_value_external(env, args[0], &handle);
  auto* h = static_cast<Handle*>(handle);
  if (h && g_api) {
    g_api->ReleaseSession(h->session);
    ReleaseSharedWeights(&h->weights);  // after the session: it read them to its end
  }
  delete h;
  return nullptr;
}

napi_value MemorySettings(napi_env env, napi_callback_info) {
  napi_value result, reuse;
  NAPI_OK(napi_create_object(env, &result));
  NAPI_OK(napi_get_boolean(env, g_mem_reuse_switch, &reuse));
  NAPI_OK(napi_set_named_property(env, result, "memReuseOff", reuse));
  return result;
}

napi_value Init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"load", nullptr, Load, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"createSession", nullptr, CreateSession, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"run", nullptr, Run, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"release", nullptr, Release, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"memorySettings", nullptr, MemorySettings, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
