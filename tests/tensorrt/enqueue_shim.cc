// Runs libamx_trt.so's plugins on real GPU buffers the way a deserialized TensorRT engine
// does (createPlugin(kRUNTIME) from the serialized fields, attachToContext, onShapeChange,
// enqueue), from Python: tests/tensorrt/test_enqueue_gpu.py passes torch CUDA tensors' device
// pointers and compares the outputs with the CUDA kernels called directly. A shared library
// loaded with ctypes, built with g++ against the TensorRT and CUDA headers, linked with -ldl
// only (the plugin library brings its own CUDA runtime).
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace {

std::string last_error;

int fail(const std::string& message) {
  last_error = message;
  return 1;
}

IPluginCreatorV3One* find_creator(const char* library, const char* name) {
  void* handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);  // reloading returns the same handle
  if (handle == nullptr) return nullptr;
  using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
  auto get = reinterpret_cast<GetCreators>(dlsym(handle, "getCreators"));
  if (get == nullptr) return nullptr;
  int32_t count = 0;
  IPluginCreatorInterface* const* creators = get(count);
  for (int32_t i = 0; i < count; ++i) {
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[i]);
    if (std::strcmp(creator->getPluginName(), name) == 0) return creator;
  }
  return nullptr;
}

Dims dims_of(std::vector<int64_t> const& values) {
  Dims d{};
  d.nbDims = int32_t(values.size());
  for (size_t i = 0; i < values.size(); ++i) d.d[i] = values[i];
  return d;
}

PluginTensorDesc desc(DataType type, std::vector<int64_t> const& values) {
  PluginTensorDesc d{};
  d.dims = dims_of(values);
  d.type = type;
  d.format = TensorFormat::kLINEAR;
  d.scale = -1.0F;
  return d;
}

DataType data_type(int dtype) {
  return dtype == 1 ? DataType::kHALF : (dtype == 2 ? DataType::kBF16 : DataType::kFLOAT);
}

// Build-phase plugin from fields, then the runtime plugin an engine would deserialize.
IPluginV3* runtime_plugin(IPluginCreatorV3One* creator, PluginFieldCollection const& fields) {
  IPluginV3* built = creator->createPlugin("shim", &fields, TensorRTPhase::kBUILD);
  if (built == nullptr) return nullptr;
  auto* runtime = static_cast<IPluginV3OneRuntime*>(
      built->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
  IPluginV3* deserialized =
      creator->createPlugin("shim", runtime->getFieldsToSerialize(), TensorRTPhase::kRUNTIME);
  delete built;
  if (deserialized == nullptr) return nullptr;
  auto* rt = static_cast<IPluginV3OneRuntime*>(
      deserialized->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
  IPluginV3* attached = rt->attachToContext(nullptr);
  delete deserialized;
  return attached;
}

// onShapeChange, the workspace size for exactly these shapes, then enqueue.
int run(IPluginV3* plugin, std::vector<PluginTensorDesc> const& in, PluginTensorDesc const& out,
        std::vector<void const*> const& inputs, void* output, void* workspace,
        size_t workspace_bytes, void* stream) {
  auto* build = static_cast<IPluginV3OneBuild*>(
      plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
  auto* rt = static_cast<IPluginV3OneRuntime*>(
      plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
  std::vector<DynamicPluginTensorDesc> din(in.size());
  for (size_t i = 0; i < in.size(); ++i) din[i] = {in[i], in[i].dims, in[i].dims, in[i].dims};
  DynamicPluginTensorDesc dout{out, out.dims, out.dims, out.dims};
  if (build != nullptr) {
    const size_t need = build->getWorkspaceSize(din.data(), int32_t(din.size()), &dout, 1);
    if (need > workspace_bytes)
      return fail("workspace: the plugin needs " + std::to_string(need) + " bytes, got " +
                  std::to_string(workspace_bytes));
  }
  if (rt->onShapeChange(in.data(), int32_t(in.size()), &out, 1) != 0) return fail("onShapeChange");
  void* outputs[1] = {output};
  if (rt->enqueue(in.data(), &out, inputs.data(), outputs, workspace,
                  static_cast<cudaStream_t>(stream)) != 0)
    return fail("enqueue returned non-zero");
  return 0;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) const char* shim_last_error() {
  return last_error.c_str();
}

// amx.MatMul: x [m, k] of dtype; codes int32 [n, code_words]; scales int32 [scale_words];
// bias [n] of dtype or null; y [m, n] of dtype.
extern "C" __attribute__((visibility("default"))) int shim_matmul(
    const char* library, const char* weight_format, const char* act_format, int32_t k,
    float weight_tensor_scale, int dtype, int64_t m, int64_t n, int64_t code_words,
    int64_t scale_words, const void* x, const void* codes, const void* scales, const void* bias,
    void* y, void* workspace, size_t workspace_bytes, void* stream) {
  IPluginCreatorV3One* creator = find_creator(library, "MatMul");
  if (creator == nullptr) return fail(std::string("no MatMul creator in ") + library);
  const std::string wf(weight_format), af(act_format);
  PluginField fields[] = {
      {"weight_format", wf.c_str(), PluginFieldType::kCHAR, int32_t(wf.size() + 1)},
      {"act_format", af.c_str(), PluginFieldType::kCHAR, int32_t(af.size() + 1)},
      {"in_features", &k, PluginFieldType::kINT32, 1},
      {"weight_tensor_scale", &weight_tensor_scale, PluginFieldType::kFLOAT32, 1}};
  const PluginFieldCollection collection{4, fields};
  IPluginV3* plugin = runtime_plugin(creator, collection);
  if (plugin == nullptr) return fail("createPlugin failed (see the plugin's log on stderr)");
  const DataType t = data_type(dtype);
  std::vector<PluginTensorDesc> in = {desc(t, {m, k}), desc(DataType::kINT32, {n, code_words}),
                                      desc(DataType::kINT32, {scale_words})};
  std::vector<void const*> inputs = {x, codes, scales};
  if (bias != nullptr) {
    in.push_back(desc(t, {n}));
    inputs.push_back(bias);
  }
  const int rc = run(plugin, in, desc(t, {m, n}), inputs, y, workspace, workspace_bytes, stream);
  delete plugin;
  return rc;
}

// amx.Quantize: x and y [rows, k] of dtype.
extern "C" __attribute__((visibility("default"))) int shim_quantize(
    const char* library, const char* format, int dtype, int64_t rows, int64_t k, const void* x,
    void* y, void* workspace, size_t workspace_bytes, void* stream) {
  IPluginCreatorV3One* creator = find_creator(library, "Quantize");
  if (creator == nullptr) return fail(std::string("no Quantize creator in ") + library);
  const std::string f(format);
  PluginField fields[] = {{"format", f.c_str(), PluginFieldType::kCHAR, int32_t(f.size() + 1)}};
  const PluginFieldCollection collection{1, fields};
  IPluginV3* plugin = runtime_plugin(creator, collection);
  if (plugin == nullptr) return fail("createPlugin failed (see the plugin's log on stderr)");
  const DataType t = data_type(dtype);
  const int rc =
      run(plugin, {desc(t, {rows, k})}, desc(t, {rows, k}), {x}, y, workspace, workspace_bytes, stream);
  delete plugin;
  return rc;
}
