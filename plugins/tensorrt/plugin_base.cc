#include "plugin_base.h"

#include <atomic>
#include <cstdio>
#include <cstring>

#include "amx_cuda.h"

namespace amx::trt {

namespace {
std::atomic<ILoggerFinder*> logger_finder{nullptr};

const char* field_type_name(PluginFieldType t) {
  switch (t) {
    case PluginFieldType::kCHAR:
      return "a string (kCHAR)";
    case PluginFieldType::kINT32:
      return "an int32 (kINT32)";
    case PluginFieldType::kFLOAT32:
      return "a float32 (kFLOAT32)";
    default:
      return "another type";
  }
}
}  // namespace

void set_logger_finder(ILoggerFinder* finder) { logger_finder.store(finder); }

void log(ILogger::Severity severity, const std::string& message) {
  const std::string text = "amx_trt: " + message;
  ILoggerFinder* finder = logger_finder.load();
  // findLogger must be called on the thread of the plugin call (NvInferRuntime.h)
  ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
  if (logger != nullptr)
    logger->log(severity, text.c_str());
  else
    std::fprintf(stderr, "%s\n", text.c_str());
}

std::string kernel_error(int rc) {
  std::string message = amx_cpu_error_string(rc);
  if (rc == AMX_ERR_CUDA) message += std::string(": ") + amx_cuda_last_error();
  return message;
}

bool is_float_type(DataType t) {
  return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16;
}

int amx_dtype(DataType t) {
  switch (t) {
    case DataType::kFLOAT:
      return AMX_DTYPE_FLOAT32;
    case DataType::kHALF:
      return AMX_DTYPE_FLOAT16;
    case DataType::kBF16:
      return AMX_DTYPE_BFLOAT16;
    default:
      return -1;
  }
}

// ---- fields ----------------------------------------------------------------------------------

FieldReader::FieldReader(std::string where, const PluginFieldCollection* fields)
    : where_(std::move(where)), fields_(fields) {}

void FieldReader::fail(const std::string& message) {
  ok_ = false;
  log_error(where_ + ": " + message);
}

const PluginField* FieldReader::find(const char* name) const {
  if (fields_ == nullptr) return nullptr;
  for (int32_t i = 0; i < fields_->nbFields; ++i) {
    const PluginField& f = fields_->fields[i];
    if (f.name != nullptr && std::strcmp(f.name, name) == 0) return &f;
  }
  return nullptr;
}

const PluginField* FieldReader::typed(const char* name, PluginFieldType type) {
  const PluginField* f = find(name);
  if (f == nullptr) return nullptr;
  if (f->type != type || f->data == nullptr || f->length < 1) {
    fail(std::string("field ") + name + " must be " + field_type_name(type) + " with a value");
    return nullptr;
  }
  return f;
}

std::string FieldReader::string(const char* name, const char* fallback) {
  const PluginField* f = typed(name, PluginFieldType::kCHAR);
  if (f == nullptr) {
    if (fallback == nullptr && find(name) == nullptr) fail(std::string("field ") + name + " is missing");
    return fallback != nullptr ? fallback : "";
  }
  // the ONNX parser passes strlen + 1 bytes (with the NUL); others may pass strlen
  const char* data = static_cast<const char*>(f->data);
  return std::string(data, strnlen(data, size_t(f->length)));
}

int32_t FieldReader::int32(const char* name) {
  const PluginField* f = typed(name, PluginFieldType::kINT32);
  if (f == nullptr) {
    if (find(name) == nullptr) fail(std::string("field ") + name + " is missing");
    return 0;
  }
  return *static_cast<const int32_t*>(f->data);
}

float FieldReader::float32(const char* name, float fallback) {
  const PluginField* f = typed(name, PluginFieldType::kFLOAT32);
  return f != nullptr ? *static_cast<const float*>(f->data) : fallback;
}

void FieldList::add_string(const char* name, const std::string& value) {
  strings_.push_back(value);
  const std::string& s = strings_.back();
  fields_.emplace_back(name, s.c_str(), PluginFieldType::kCHAR, int32_t(s.size() + 1));
}

void FieldList::add_int32(const char* name, int32_t value) {
  ints_.push_back(value);
  fields_.emplace_back(name, &ints_.back(), PluginFieldType::kINT32, 1);
}

void FieldList::add_float32(const char* name, float value) {
  floats_.push_back(value);
  fields_.emplace_back(name, &floats_.back(), PluginFieldType::kFLOAT32, 1);
}

void FieldList::add_name(const char* name, PluginFieldType type) {
  fields_.emplace_back(name, nullptr, type, 1);
}

const PluginFieldCollection* FieldList::collection() {
  collection_.nbFields = int32_t(fields_.size());
  collection_.fields = fields_.data();
  return &collection_;
}

// ---- the plugin base -------------------------------------------------------------------------

IPluginCapability* PluginBase::getCapabilityInterface(PluginCapabilityType type) noexcept {
  switch (type) {
    case PluginCapabilityType::kCORE:
      return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD:
      return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME:
      return static_cast<IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

int32_t PluginBase::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                       DataType const* inputTypes, int32_t nbInputs) const noexcept {
  if (nbOutputs != 1 || nbInputs < 1 || !is_float_type(inputTypes[0])) {
    log_error(std::string(getPluginName()) + ": X must be float32, float16 or bfloat16");
    return 1;
  }
  outputTypes[0] = inputTypes[0];
  return 0;
}

IPluginV3* PluginBase::attachToContext(IPluginResourceContext*) noexcept { return clone(); }

}  // namespace amx::trt
