// What the two TensorRT plugins share: logging through TensorRT's logger, reading and
// writing plugin fields, the IPluginV3 capability boilerplate, and the creator template.
// The plugins themselves only add their fields, shape rules and enqueue.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

namespace amx::trt {

using namespace nvinfer1;

// The ONNX nodes' plugin_namespace / plugin_version attributes (graph_passes/contract.py).
constexpr const char* kNamespace = "amx";
constexpr const char* kVersion = "1";

// The logger finder TensorRT hands to the library (setLoggerFinder), or null.
void set_logger_finder(ILoggerFinder* finder);
// "amx_trt: <message>" to TensorRT's logger (stderr when TensorRT gave none).
void log(ILogger::Severity severity, const std::string& message);
inline void log_error(const std::string& message) { log(ILogger::Severity::kERROR, message); }

// The message of a failed amx_cuda_* call (with CUDA's own for AMX_ERR_CUDA).
std::string kernel_error(int rc);

bool is_float_type(DataType t);
// AMX_DTYPE_* of a float type (-1 for any other).
int amx_dtype(DataType t);

// Typed reads of a PluginFieldCollection for one plugin; each failure is logged with the
// plugin and field name and makes ok() false.
class FieldReader {
 public:
  FieldReader(std::string where, const PluginFieldCollection* fields);
  std::string string(const char* name, const char* fallback = nullptr);
  int32_t int32(const char* name);
  float float32(const char* name, float fallback);
  bool has(const char* name) const { return find(name) != nullptr; }
  bool ok() const { return ok_; }
  // Logs `message` as this plugin's error and makes ok() false.
  void fail(const std::string& message);

 private:
  const PluginField* find(const char* name) const;
  const PluginField* typed(const char* name, PluginFieldType type);
  std::string where_;
  const PluginFieldCollection* fields_;
  bool ok_ = true;
};

// PluginFields that own their data, for getFieldNames and getFieldsToSerialize (TensorRT
// keeps the pointers only until the next call, but they must stay valid until then).
class FieldList {
 public:
  FieldList() = default;
  FieldList(const FieldList&) = delete;
  FieldList& operator=(const FieldList&) = delete;
  void add_string(const char* name, const std::string& value);
  void add_int32(const char* name, int32_t value);
  void add_float32(const char* name, float value);
  // A field with no data: what getFieldNames lists.
  void add_name(const char* name, PluginFieldType type);
  const PluginFieldCollection* collection();

 private:
  std::deque<std::string> strings_;
  std::deque<int32_t> ints_;
  std::deque<float> floats_;
  std::vector<PluginField> fields_;
  PluginFieldCollection collection_{0, nullptr};
};

// The capability views and defaults both plugins share: one output of X's type, linear
// formats, no tactics; a plugin attached to a context is a clone.
class PluginBase : public IPluginV3,
                   public IPluginV3OneCore,
                   public IPluginV3OneBuild,
                   public IPluginV3OneRuntime {
 public:
  IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override;
  AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
  AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }
  int32_t getNbOutputs() const noexcept override { return 1; }
  int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                             int32_t nbInputs) const noexcept override;
  IPluginV3* attachToContext(IPluginResourceContext* context) noexcept override;
};

// A creator for Plugin, which provides: static const char* kName; static void
// describe_fields(FieldList&); static Plugin* create(const PluginFieldCollection*) (null
// after logging why).
template <typename Plugin>
class Creator : public IPluginCreatorV3One {
 public:
  Creator() { Plugin::describe_fields(field_names_); }
  AsciiChar const* getPluginName() const noexcept override { return Plugin::kName; }
  AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
  AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }
  PluginFieldCollection const* getFieldNames() noexcept override {
    return field_names_.collection();
  }
  IPluginV3* createPlugin(AsciiChar const* name, PluginFieldCollection const* fc,
                          TensorRTPhase) noexcept override {
    try {
      return Plugin::create(name != nullptr ? name : "", fc);
    } catch (const std::exception& e) {  // nothing may escape into TensorRT
      log_error(std::string(Plugin::kName) + ": " + e.what());
      return nullptr;
    }
  }

 private:
  FieldList field_names_;
};

}  // namespace amx::trt
