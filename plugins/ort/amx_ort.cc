// libamx_ort.so: amx.MatMul and amx.Quantize (graph_passes/contract.py) as onnxruntime
// custom ops on the CPU execution provider, for float32, float16 and bfloat16 activations.
// The work is done by the C ABI kernels (plugins/cpu/amx_cpu.h); this file only adapts
// tensors: float16/bfloat16 are converted to float32 exactly and back after the op.
//
// Compatibility: the library requests C API version 16 and declares its custom ops at
// version 16, so it loads in onnxruntime 1.16 and newer (tested here with 1.32).
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "amx/format.h"
#include "amx_cpu.h"

namespace {

constexpr uint32_t kOrtApiVersion = 16;
constexpr const char* kDomain = "amx";
constexpr float kFloat16Max = 65504.0f;

using ElementType = ONNXTensorElementDataType;

std::string type_name(ElementType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
      return "bfloat16";
    default:
      return "element type " + std::to_string(int(t));
  }
}

// Any float tensor as float32 values (a copy unless it already is float32).
const float* as_float(const Ort::ConstValue& v, size_t count, std::vector<float>* buffer) {
  const ElementType t = v.GetTensorTypeAndShapeInfo().GetElementType();
  if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return v.GetTensorData<float>();
  buffer->resize(count);
  if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
    const Ort::Float16_t* p = v.GetTensorData<Ort::Float16_t>();
    for (size_t i = 0; i < count; ++i) (*buffer)[i] = p[i].ToFloat();
  } else if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16) {
    const Ort::BFloat16_t* p = v.GetTensorData<Ort::BFloat16_t>();
    for (size_t i = 0; i < count; ++i) (*buffer)[i] = p[i].ToFloat();
  } else {
    ORT_CXX_API_THROW("expected a float32, float16 or bfloat16 tensor, got " + type_name(t),
                      ORT_INVALID_ARGUMENT);
  }
  return buffer->data();
}

// float32 results into an output of element type t; float16 optionally saturates to ±65504
// (FORMAT.md's rule for fake_quant), otherwise it rounds like a Cast.
void store(const float* y, size_t count, ElementType t, Ort::UnownedValue& out, bool saturate) {
  if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
    std::memcpy(out.GetTensorMutableData<float>(), y, count * sizeof(float));
  } else if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
    Ort::Float16_t* p = out.GetTensorMutableData<Ort::Float16_t>();
    for (size_t i = 0; i < count; ++i) {
      float v = y[i];
      if (saturate && !std::isnan(v)) v = v > kFloat16Max ? kFloat16Max : (v < -kFloat16Max ? -kFloat16Max : v);
      p[i] = Ort::Float16_t(v);
    }
  } else {
    Ort::BFloat16_t* p = out.GetTensorMutableData<Ort::BFloat16_t>();
    for (size_t i = 0; i < count; ++i) p[i] = Ort::BFloat16_t(y[i]);
  }
}

void check(int rc, const std::string& where) {
  if (rc != AMX_OK) ORT_CXX_API_THROW(where + ": " + amx_cpu_error_string(rc), ORT_RUNTIME_EXCEPTION);
}

std::string format_attribute(const Ort::ConstKernelInfo& info, const char* name, bool allow_none) {
  const std::string value = info.GetAttribute<std::string>(name);
  amx::Format f;
  if ((allow_none && value == "none") || amx::format_by_name(value.c_str(), &f)) return value;
  ORT_CXX_API_THROW("amx node " + info.GetNodeName() + ": attribute " + name + "=\"" + value +
                        "\" is not a known format (amxfp4, amxfp4-e4m3, amxfp4-e8m0, mxfp4, "
                        "nvfp4" + (allow_none ? ", none)" : ")"),
                    ORT_INVALID_ARGUMENT);
}

// ---- amx.MatMul ------------------------------------------------------------------------------

struct PackedDeleter {
  void operator()(amx_packed_weights* p) const { amx_cpu_free_packed(p); }
};

struct MatMulKernel {
  std::string name, weight_format, act_format;
  int64_t in_features = 0;
  float weight_tensor_scale = 1.0f;
  amx::Format wf{};
  // The weights packed for the CPU on the first run, and what they were packed from: the
  // weight inputs are initializers, so later runs see the same buffers (re-packed otherwise).
  std::mutex pack_mutex;
  std::shared_ptr<amx_packed_weights> packed;  // shared: a run keeps what it uses alive
  const uint8_t* packed_codes = nullptr;
  const uint8_t* packed_scales = nullptr;

  std::shared_ptr<amx_packed_weights> weights(const uint8_t* codes, const uint8_t* scales,
                                              int64_t n) {
    std::lock_guard<std::mutex> lock(pack_mutex);
    if (!packed || codes != packed_codes || scales != packed_scales) {
      packed.reset(amx_cpu_pack_weights(weight_format.c_str(), codes, scales,
                                        weight_tensor_scale, n, in_features),
                   PackedDeleter());
      if (!packed) ORT_CXX_API_THROW("amx.MatMul " + name + ": cannot pack the weights", ORT_FAIL);
      packed_codes = codes;
      packed_scales = scales;
    }
    return packed;
  }

  explicit MatMulKernel(const OrtKernelInfo* raw) {
    Ort::ConstKernelInfo info(raw);
    name = info.GetNodeName();
    weight_format = format_attribute(info, "weight_format", false);
    act_format = format_attribute(info, "act_format", true);
    in_features = info.GetAttribute<int64_t>("in_features");
    amx::format_by_name(weight_format.c_str(), &wf);
    if (wf.tensor_scale) weight_tensor_scale = info.GetAttribute<float>("weight_tensor_scale");
    if (in_features <= 0)
      ORT_CXX_API_THROW("amx.MatMul " + name + ": in_features must be positive", ORT_INVALID_ARGUMENT);
  }

  void Compute(OrtKernelContext* raw) {
    Ort::KernelContext ctx(raw);
    const Ort::ConstValue x = ctx.GetInput(0), codes = ctx.GetInput(1), scales = ctx.GetInput(2);
    const auto x_info = x.GetTensorTypeAndShapeInfo();
    std::vector<int64_t> shape = x_info.GetShape();
    const std::string where = "amx.MatMul " + name;
    if (shape.empty() || shape.back() != in_features)
      ORT_CXX_API_THROW(where + ": X's last dimension must be in_features=" +
                            std::to_string(in_features), ORT_INVALID_ARGUMENT);
    const std::vector<int64_t> c_shape = codes.GetTensorTypeAndShapeInfo().GetShape();
    const std::vector<int64_t> s_shape = scales.GetTensorTypeAndShapeInfo().GetShape();
    const int64_t nb = (in_features + wf.block - 1) / wf.block;
    if (c_shape.size() != 2 || c_shape[1] != nb * wf.block / 2 || s_shape.size() != 3 ||
        s_shape[0] != c_shape[0] || s_shape[1] != nb || s_shape[2] != wf.scales_per_block)
      ORT_CXX_API_THROW(where + ": weight codes/scales do not match in_features and " +
                            weight_format, ORT_INVALID_ARGUMENT);
    const int64_t n = c_shape[0], k = in_features;
    const size_t m = size_t(x_info.GetElementCount()) / size_t(k);

    std::vector<float> x_buffer, bias_buffer;
    const float* x32 = as_float(x, m * size_t(k), &x_buffer);
    const float* bias = nullptr;
    if (ctx.GetInputCount() > 3) {
      const Ort::ConstValue b = ctx.GetInput(3);
      if (b) {
        if (b.GetTensorTypeAndShapeInfo().GetElementCount() != size_t(n))
          ORT_CXX_API_THROW(where + ": bias must have N=" + std::to_string(n) + " values", ORT_INVALID_ARGUMENT);
        bias = as_float(b, size_t(n), &bias_buffer);
      }
    }
    shape.back() = n;
    Ort::UnownedValue out = ctx.GetOutput(0, shape);
    const ElementType t = x_info.GetElementType();
    std::vector<float> y32;
    float* y = t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ? out.GetTensorMutableData<float>()
                                                       : (y32.resize(m * size_t(n)), y32.data());
    if (m > 0) {
      const auto w = weights(codes.GetTensorData<uint8_t>(), scales.GetTensorData<uint8_t>(), n);
      check(amx_cpu_matmul_packed(w.get(), act_format.c_str(), x32, int64_t(m), bias, y), where);
    }
    if (t != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) store(y, m * size_t(n), t, out, false);
  }
};

template <ElementType T>
struct MatMulOp : Ort::CustomOpBase<MatMulOp<T>, MatMulKernel> {
  MatMulOp() { OrtCustomOp::version = kOrtApiVersion; }
  void* CreateKernel(const OrtApi&, const OrtKernelInfo* info) const { return new MatMulKernel(info); }
  const char* GetName() const { return "MatMul"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 4; }
  ElementType GetInputType(size_t i) const {
    if (i == 0) return T;
    if (i == 3) return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;  // bias: any float type
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 3 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ElementType GetOutputType(size_t) const { return T; }
};

// ---- amx.Quantize ----------------------------------------------------------------------------

struct QuantizeKernel {
  std::string name, format;

  explicit QuantizeKernel(const OrtKernelInfo* raw) {
    Ort::ConstKernelInfo info(raw);
    name = info.GetNodeName();
    format = format_attribute(info, "format", false);
  }

  void Compute(OrtKernelContext* raw) {
    Ort::KernelContext ctx(raw);
    const Ort::ConstValue x = ctx.GetInput(0);
    const auto x_info = x.GetTensorTypeAndShapeInfo();
    const std::vector<int64_t> shape = x_info.GetShape();
    const std::string where = "amx.Quantize " + name;
    if (shape.empty()) ORT_CXX_API_THROW(where + ": X needs at least one axis", ORT_INVALID_ARGUMENT);
    Ort::UnownedValue out = ctx.GetOutput(0, shape);
    const size_t count = x_info.GetElementCount();
    const int64_t k = shape.back();
    if (count == 0) return;
    std::vector<float> x_buffer, y32(count);
    const float* x32 = as_float(x, count, &x_buffer);
    check(amx_cpu_fake_quant(format.c_str(), x32, int64_t(count) / k, k, y32.data()), where);
    store(y32.data(), count, x_info.GetElementType(), out, true);
  }
};

template <ElementType T>
struct QuantizeOp : Ort::CustomOpBase<QuantizeOp<T>, QuantizeKernel> {
  QuantizeOp() { OrtCustomOp::version = kOrtApiVersion; }
  void* CreateKernel(const OrtApi&, const OrtKernelInfo* info) const { return new QuantizeKernel(info); }
  const char* GetName() const { return "Quantize"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 1; }
  ElementType GetInputType(size_t) const { return T; }
  size_t GetOutputTypeCount() const { return 1; }
  ElementType GetOutputType(size_t) const { return T; }
};

constexpr ElementType kF32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
constexpr ElementType kF16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
constexpr ElementType kBF16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;

// Static: onnxruntime keeps pointers to the ops for the life of the process.
MatMulOp<kF32> matmul_f32;
MatMulOp<kF16> matmul_f16;
MatMulOp<kBF16> matmul_bf16;
QuantizeOp<kF32> quantize_f32;
QuantizeOp<kF16> quantize_f16;
QuantizeOp<kBF16> quantize_bf16;

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(kOrtApiVersion);
  if (api == nullptr) return nullptr;  // cannot even report: onnxruntime older than 1.16
  Ort::InitApi(api);
  try {
    static Ort::CustomOpDomain domain{kDomain};  // one per process, shared by all sessions
    static const bool filled = [] {
      for (OrtCustomOp* op : std::initializer_list<OrtCustomOp*>{
               &matmul_f32, &matmul_f16, &matmul_bf16, &quantize_f32, &quantize_f16,
               &quantize_bf16})
        domain.Add(op);
      return true;
    }();
    (void)filled;
    Ort::ThrowOnError(api->AddCustomOpDomain(options, domain));
  } catch (const Ort::Exception& e) {
    return api->CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}
