// libamx_ort.so: amx.MatMul and amx.Quantize (graph_passes/contract.py) as onnxruntime
// custom ops for float32, float16 and bfloat16 activations, on the CPU execution provider and
// (when built with CUDA) the CUDA execution provider. The work is done by the C ABI kernels
// (plugins/cpu/amx_cpu.h, plugins/cuda/amx_cuda.h); this file only adapts tensors. On the CPU,
// float16/bfloat16 are converted to float32 exactly and back after the op; the CUDA kernels
// read and write every type themselves, on onnxruntime's stream, with scratch memory from
// onnxruntime's allocator.
//
// Threads: on the CPU the kernels' parallel loops run on onnxruntime's intra-op thread pool
// (KernelContext_ParallelFor, C API 17), installed around each Compute; intra_op_num_threads
// and the pool's spinning settings apply to them as to onnxruntime's own kernels.
//
// Compatibility: the library requests C API version 17 where onnxruntime has it (1.17 and
// newer) and 16 otherwise: it loads in onnxruntime 1.16 too, whose CPU runs then stay on the
// calling thread. Its custom ops are declared at version 16 (tested: 1.16.3, 1.17.3, 1.32).
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "amx/format.h"
#include "amx_cpu.h"
#ifdef AMX_WITH_CUDA
#include "amx_cuda.h"
#endif

namespace {

constexpr uint32_t kOrtApiVersion = 17;  // KernelContext_ParallelFor
constexpr uint32_t kOrtApiMinimum = 16;
constexpr uint32_t kOpVersion = 16;  // the OrtCustomOp fields onnxruntime may read
// whether the API onnxruntime gave us has KernelContext_ParallelFor (set by every registration,
// to the same value: one onnxruntime per process)
std::atomic<bool> g_parallel_for{false};
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
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
      return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
      return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
      return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
      return "int64";
    default:
      return "element type " + std::to_string(int(t));
  }
}

// A tensor's data, read only. Not ConstValue::GetTensorData: these headers implement it with
// C API 23's GetTensorData, past the end of the API table of onnxruntime < 1.23.
const void* tensor_data(const Ort::ConstValue& v) {
  void* out = nullptr;
  Ort::ThrowOnError(Ort::GetApi().GetTensorMutableData(const_cast<OrtValue*>(
      static_cast<const OrtValue*>(v)), &out));
  return out;
}
template <typename T>
const T* tensor_data(const Ort::ConstValue& v) {
  return static_cast<const T*>(tensor_data(v));
}

// Any float tensor as float32 values (a copy unless it already is float32).
const float* as_float(const Ort::ConstValue& v, size_t count, std::vector<float>* buffer) {
  const ElementType t = v.GetTensorTypeAndShapeInfo().GetElementType();
  if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return tensor_data<float>(v);
  buffer->resize(count);
  if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
    const Ort::Float16_t* p = tensor_data<Ort::Float16_t>(v);
    for (size_t i = 0; i < count; ++i) (*buffer)[i] = p[i].ToFloat();
  } else if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16) {
    const Ort::BFloat16_t* p = tensor_data<Ort::BFloat16_t>(v);
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

// Throws the kernels' message for a failed call (with CUDA's own for AMX_ERR_CUDA).
void check(int rc, const std::string& where) {
  if (rc == AMX_OK) return;
  std::string message = where + ": " + amx_cpu_error_string(rc);
#ifdef AMX_WITH_CUDA
  if (rc == AMX_ERR_CUDA) message += std::string(": ") + amx_cuda_last_error();
#endif
  ORT_CXX_API_THROW(message, ORT_RUNTIME_EXCEPTION);
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

// The kernels' parallel loops on onnxruntime's intra-op pool while this lives (one Compute on
// this thread). Where the pool cannot be had, they run on the calling thread.
class IntraOpThreads {
 public:
  explicit IntraOpThreads(const OrtKernelContext* ctx) {
    if (g_parallel_for.load(std::memory_order_relaxed))
      amx_cpu_set_parallel(&run, const_cast<OrtKernelContext*>(ctx));
  }
  ~IntraOpThreads() { amx_cpu_set_parallel(nullptr, nullptr); }
  IntraOpThreads(const IntraOpThreads&) = delete;
  IntraOpThreads& operator=(const IntraOpThreads&) = delete;

 private:
  // num_batch 0: one pool work item per task (the kernels size their tasks themselves)
  static void run(void* ctx, void (*fn)(void*, size_t), size_t tasks, void* data) {
    OrtStatus* status = Ort::GetApi().KernelContext_ParallelFor(
        static_cast<const OrtKernelContext*>(ctx), fn, tasks, 0, data);
    if (status == nullptr) return;
    // refused (a build without the kernel-context API): every task here, which is harmless
    // for any that ran (amx_cpu.h)
    Ort::GetApi().ReleaseStatus(status);
    for (size_t t = 0; t < tasks; ++t) fn(data, t);
  }
};

// ---- amx.MatMul ------------------------------------------------------------------------------

// The attributes of an amx.MatMul node, and the shapes of one run checked against them.
struct MatMulNode {
  std::string name, weight_format, act_format;
  int64_t in_features = 0;
  float weight_tensor_scale = 1.0f;
  amx::Format wf{};

  explicit MatMulNode(const OrtKernelInfo* raw) {
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

  std::string where() const { return "amx.MatMul " + name; }

  struct Run {
    std::vector<int64_t> out_shape;
    int64_t m = 0, n = 0;
    bool has_bias = false;
    const uint8_t* codes = nullptr;  // the packed bytes, whichever form they came in
    const uint8_t* scales = nullptr;
  };

  // Checks X, the weights and the bias of this run; out_shape is X's with N last.
  Run shapes(Ort::KernelContext& ctx) const {
    const Ort::ConstValue x = ctx.GetInput(0), codes = ctx.GetInput(1), scales = ctx.GetInput(2);
    const auto x_info = x.GetTensorTypeAndShapeInfo();
    Run run;
    run.out_shape = x_info.GetShape();
    if (run.out_shape.empty() || run.out_shape.back() != in_features)
      ORT_CXX_API_THROW(where() + ": X's last dimension must be in_features=" +
                            std::to_string(in_features), ORT_INVALID_ARGUMENT);
    const std::vector<int64_t> c_shape = codes.GetTensorTypeAndShapeInfo().GetShape();
    if (c_shape.size() != 2)
      ORT_CXX_API_THROW(where() + ": Wcodes must have two axes [N, ...]", ORT_INVALID_ARGUMENT);
    run.n = c_shape[0];
    // The onnxruntime form (uint8) or the TensorRT form (int32 words holding the same bytes,
    // graph_passes/contract.py): the kernels read bytes either way.
    const int64_t nb = (in_features + wf.block - 1) / wf.block;
    const int64_t code_bytes = nb * wf.block / 2, scale_bytes = run.n * nb * wf.scales_per_block;
    const bool codes_ok = weight_form(codes, "Wcodes") == kBytes
                              ? c_shape[1] == code_bytes
                              : c_shape[1] * kWordBytes == code_bytes;
    if (!codes_ok)
      ORT_CXX_API_THROW(where() + ": Wcodes [" + std::to_string(run.n) + ", " +
                            std::to_string(c_shape[1]) + "] does not match in_features=" +
                            std::to_string(in_features) + " and " + weight_format + " (" +
                            std::to_string(code_bytes) + " bytes per row)", ORT_INVALID_ARGUMENT);
    const std::vector<int64_t> s_shape = scales.GetTensorTypeAndShapeInfo().GetShape();
    if (weight_form(scales, "Wscales") == kBytes) {
      if (s_shape.size() != 3 || s_shape[0] != run.n || s_shape[1] != nb ||
          s_shape[2] != wf.scales_per_block)
        ORT_CXX_API_THROW(where() + ": uint8 Wscales must be [N, nb, S] = [" +
                              std::to_string(run.n) + ", " + std::to_string(nb) + ", " +
                              std::to_string(wf.scales_per_block) + "]", ORT_INVALID_ARGUMENT);
    } else {
      const int64_t words = (scale_bytes + kWordBytes - 1) / kWordBytes;
      if (s_shape.size() != 1 || s_shape[0] != words)
        ORT_CXX_API_THROW(where() + ": int32 Wscales must be 1-D [ceil(N*nb*S/4)] = [" +
                              std::to_string(words) + "] for N=" + std::to_string(run.n) +
                              " and " + weight_format, ORT_INVALID_ARGUMENT);
    }
    run.codes = static_cast<const uint8_t*>(tensor_data(codes));
    run.scales = static_cast<const uint8_t*>(tensor_data(scales));
    run.m = int64_t(x_info.GetElementCount()) / in_features;
    if (ctx.GetInputCount() > 3 && ctx.GetInput(3)) {
      if (ctx.GetInput(3).GetTensorTypeAndShapeInfo().GetElementCount() != size_t(run.n))
        ORT_CXX_API_THROW(where() + ": bias must have N=" + std::to_string(run.n) + " values",
                          ORT_INVALID_ARGUMENT);
      run.has_bias = true;
    }
    run.out_shape.back() = run.n;
    return run;
  }

 private:
  static constexpr int64_t kWordBytes = 4;
  enum Form { kBytes, kWords };

  // uint8 (the onnxruntime form) or int32 (the TensorRT form); the op declares these inputs
  // as any type, so every other type is refused here.
  Form weight_form(const Ort::ConstValue& v, const char* label) const {
    const ElementType t = v.GetTensorTypeAndShapeInfo().GetElementType();
    if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8) return kBytes;
    if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32) return kWords;
    ORT_CXX_API_THROW(where() + ": " + label + " must be uint8 or int32 (the TensorRT form), got " +
                          type_name(t), ORT_INVALID_ARGUMENT);
  }
};

struct PackedDeleter {
  void operator()(amx_packed_weights* p) const { amx_cpu_free_packed(p); }
};

struct MatMulKernel : MatMulNode {
  static constexpr const char* kProvider = "CPUExecutionProvider";
  // The weights packed for the CPU on the first run, and what they were packed from: the
  // weight inputs are initializers, so later runs see the same buffers (re-packed otherwise).
  std::mutex pack_mutex;
  std::shared_ptr<amx_packed_weights> packed;  // shared: a run keeps what it uses alive
  const uint8_t* packed_codes = nullptr;
  const uint8_t* packed_scales = nullptr;

  explicit MatMulKernel(const OrtKernelInfo* raw) : MatMulNode(raw) {}

  std::shared_ptr<amx_packed_weights> weights(const uint8_t* codes, const uint8_t* scales,
                                              int64_t n) {
    std::lock_guard<std::mutex> lock(pack_mutex);
    if (!packed || codes != packed_codes || scales != packed_scales) {
      packed.reset(amx_cpu_pack_weights(weight_format.c_str(), codes, scales,
                                        weight_tensor_scale, n, in_features),
                   PackedDeleter());
      if (!packed) ORT_CXX_API_THROW(where() + ": cannot pack the weights", ORT_FAIL);
      packed_codes = codes;
      packed_scales = scales;
    }
    return packed;
  }

  void Compute(OrtKernelContext* raw) {
    Ort::KernelContext ctx(raw);
    const IntraOpThreads threads(raw);
    const Run run = shapes(ctx);
    const Ort::ConstValue x = ctx.GetInput(0);
    const size_t m = size_t(run.m), n = size_t(run.n);
    std::vector<float> x_buffer, bias_buffer;
    const float* x32 = as_float(x, m * size_t(in_features), &x_buffer);
    const float* bias = run.has_bias ? as_float(ctx.GetInput(3), n, &bias_buffer) : nullptr;
    Ort::UnownedValue out = ctx.GetOutput(0, run.out_shape);
    const ElementType t = x.GetTensorTypeAndShapeInfo().GetElementType();
    std::vector<float> y32;
    float* y = t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ? out.GetTensorMutableData<float>()
                                                       : (y32.resize(m * n), y32.data());
    if (m > 0) {
      const auto w = weights(run.codes, run.scales, run.n);
      check(amx_cpu_matmul_packed(w.get(), act_format.c_str(), x32, run.m, bias, y), where());
    }
    if (t != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) store(y, m * n, t, out, false);
  }
};

#ifdef AMX_WITH_CUDA
int dtype_code(ElementType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return AMX_DTYPE_FLOAT32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return AMX_DTYPE_FLOAT16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
      return AMX_DTYPE_BFLOAT16;
    default:
      ORT_CXX_API_THROW("expected a float32, float16 or bfloat16 tensor, got " + type_name(t),
                        ORT_INVALID_ARGUMENT);
  }
}

ElementType element_type(const Ort::ConstValue& v) {
  return v.GetTensorTypeAndShapeInfo().GetElementType();
}

// Scratch memory on X's device from onnxruntime's allocator, freed when Compute returns: the
// kernels queued before that use it in stream order, as onnxruntime's own CUDA kernels do.
Ort::MemoryAllocation device_scratch(Ort::KernelContext& ctx, const Ort::ConstValue& x,
                                     size_t bytes) {
  const Ort::MemoryInfo info("Cuda", OrtDeviceAllocator, x.GetTensorMemoryInfo().GetDeviceId(),
                             OrtMemTypeDefault);
  Ort::Allocator allocator = ctx.GetAllocator(*static_cast<const OrtMemoryInfo*>(info));
  return allocator.GetAllocation(bytes);
}

struct MatMulCudaKernel : MatMulNode {
  static constexpr const char* kProvider = "CUDAExecutionProvider";
  explicit MatMulCudaKernel(const OrtKernelInfo* raw) : MatMulNode(raw) {}

  void Compute(OrtKernelContext* raw) {
    Ort::KernelContext ctx(raw);
    const Run run = shapes(ctx);
    Ort::UnownedValue out = ctx.GetOutput(0, run.out_shape);
    if (run.m == 0) return;
    const Ort::ConstValue x = ctx.GetInput(0);
    const int dtype = dtype_code(element_type(x));
    const void* bias = nullptr;
    int bias_dtype = AMX_DTYPE_FLOAT32;
    if (run.has_bias) {
      bias = tensor_data(ctx.GetInput(3));
      bias_dtype = dtype_code(element_type(ctx.GetInput(3)));
    }
    const size_t bytes = amx_cuda_matmul_workspace(weight_format.c_str(), act_format.c_str(),
                                                   dtype, run.m, in_features);
    auto scratch = device_scratch(ctx, x, bytes);
    check(amx_cuda_matmul(weight_format.c_str(), act_format.c_str(), dtype,
                               tensor_data(x), run.m, in_features,
                               run.codes, run.scales, weight_tensor_scale,
                               run.n, bias, bias_dtype, out.GetTensorMutableRawData(),
                               scratch.get(), ctx.GetGPUComputeStream()),
               where());
  }
};
#endif

// One op per (element type, execution provider); Kernel::kProvider names the provider.
template <ElementType T, typename Kernel>
struct MatMulOp : Ort::CustomOpBase<MatMulOp<T, Kernel>, Kernel> {
  MatMulOp() { OrtCustomOp::version = kOpVersion; }
  void* CreateKernel(const OrtApi&, const OrtKernelInfo* info) const { return new Kernel(info); }
  const char* GetName() const { return "MatMul"; }
  const char* GetExecutionProviderType() const { return Kernel::kProvider; }
  size_t GetInputTypeCount() const { return 4; }
  ElementType GetInputType(size_t i) const {
    // Wcodes/Wscales: uint8 or int32 (the TensorRT form); bias: any float type. Checked in
    // Compute (MatMulNode::shapes), since onnxruntime has no "one of these types" here.
    return i == 0 ? T : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 3 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ElementType GetOutputType(size_t) const { return T; }
};

// ---- amx.Quantize ----------------------------------------------------------------------------

struct QuantizeNode {
  std::string name, format;

  explicit QuantizeNode(const OrtKernelInfo* raw) {
    Ort::ConstKernelInfo info(raw);
    name = info.GetNodeName();
    format = format_attribute(info, "format", false);
  }

  std::string where() const { return "amx.Quantize " + name; }

  // X, and Y allocated in X's shape; X as rows x K (count 0: nothing to compute).
  struct Run {
    Ort::ConstValue x;
    Ort::UnownedValue y;
    int64_t count, k;
  };
  Run prepare(Ort::KernelContext& ctx) const {
    const Ort::ConstValue x = ctx.GetInput(0);
    const auto info = x.GetTensorTypeAndShapeInfo();
    const std::vector<int64_t> dims = info.GetShape();
    if (dims.empty()) ORT_CXX_API_THROW(where() + ": X needs at least one axis", ORT_INVALID_ARGUMENT);
    return Run{x, ctx.GetOutput(0, dims), int64_t(info.GetElementCount()), dims.back()};
  }
};

struct QuantizeKernel : QuantizeNode {
  static constexpr const char* kProvider = "CPUExecutionProvider";
  explicit QuantizeKernel(const OrtKernelInfo* raw) : QuantizeNode(raw) {}

  void Compute(OrtKernelContext* raw) {
    Ort::KernelContext ctx(raw);
    const IntraOpThreads threads(raw);
    Run run = prepare(ctx);
    if (run.count == 0) return;
    const size_t count = size_t(run.count);
    std::vector<float> x_buffer, y32(count);
    const float* x32 = as_float(run.x, count, &x_buffer);
    check(amx_cpu_fake_quant(format.c_str(), x32, run.count / run.k, run.k, y32.data()), where());
    store(y32.data(), count, run.x.GetTensorTypeAndShapeInfo().GetElementType(), run.y, true);
  }
};

#ifdef AMX_WITH_CUDA
struct QuantizeCudaKernel : QuantizeNode {
  static constexpr const char* kProvider = "CUDAExecutionProvider";
  explicit QuantizeCudaKernel(const OrtKernelInfo* raw) : QuantizeNode(raw) {}

  void Compute(OrtKernelContext* raw) {
    Ort::KernelContext ctx(raw);
    Run run = prepare(ctx);
    if (run.count == 0) return;
    auto scratch = device_scratch(ctx, run.x, amx_cuda_quantize_workspace());
    check(amx_cuda_fake_quant(format.c_str(), dtype_code(element_type(run.x)),
                                   tensor_data(run.x), run.count / run.k, run.k,
                                   run.y.GetTensorMutableRawData(), scratch.get(),
                                   ctx.GetGPUComputeStream()),
               where());
  }
};
#endif

template <ElementType T, typename Kernel>
struct QuantizeOp : Ort::CustomOpBase<QuantizeOp<T, Kernel>, Kernel> {
  QuantizeOp() { OrtCustomOp::version = kOpVersion; }
  void* CreateKernel(const OrtApi&, const OrtKernelInfo* info) const { return new Kernel(info); }
  const char* GetName() const { return "Quantize"; }
  const char* GetExecutionProviderType() const { return Kernel::kProvider; }
  size_t GetInputTypeCount() const { return 1; }
  ElementType GetInputType(size_t) const { return T; }
  size_t GetOutputTypeCount() const { return 1; }
  ElementType GetOutputType(size_t) const { return T; }
};

constexpr ElementType kF32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
constexpr ElementType kF16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
constexpr ElementType kBF16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;

// Static: onnxruntime keeps pointers to the ops for the life of the process.
MatMulOp<kF32, MatMulKernel> matmul_f32;
MatMulOp<kF16, MatMulKernel> matmul_f16;
MatMulOp<kBF16, MatMulKernel> matmul_bf16;
QuantizeOp<kF32, QuantizeKernel> quantize_f32;
QuantizeOp<kF16, QuantizeKernel> quantize_f16;
QuantizeOp<kBF16, QuantizeKernel> quantize_bf16;
#ifdef AMX_WITH_CUDA
MatMulOp<kF32, MatMulCudaKernel> matmul_cuda_f32;
MatMulOp<kF16, MatMulCudaKernel> matmul_cuda_f16;
MatMulOp<kBF16, MatMulCudaKernel> matmul_cuda_bf16;
QuantizeOp<kF32, QuantizeCudaKernel> quantize_cuda_f32;
QuantizeOp<kF16, QuantizeCudaKernel> quantize_cuda_f16;
QuantizeOp<kBF16, QuantizeCudaKernel> quantize_cuda_bf16;
#endif

std::vector<OrtCustomOp*> all_ops() {
  return {&matmul_f32,      &matmul_f16,      &matmul_bf16,     &quantize_f32,
          &quantize_f16,    &quantize_bf16,
#ifdef AMX_WITH_CUDA
          &matmul_cuda_f32, &matmul_cuda_f16, &matmul_cuda_bf16, &quantize_cuda_f32,
          &quantize_cuda_f16, &quantize_cuda_bf16,
#endif
  };
}

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  // onnxruntime 1.x has C API version x; asking an older one for 17 would print an error
  const char* version = api_base->GetVersionString();
  const bool has_17 = std::strncmp(version, "1.", 2) != 0 || std::atoi(version + 2) >= 17;
  const OrtApi* api = has_17 ? api_base->GetApi(kOrtApiVersion) : nullptr;
  g_parallel_for.store(api != nullptr, std::memory_order_relaxed);
  if (api == nullptr) api = api_base->GetApi(kOrtApiMinimum);
  if (api == nullptr) return nullptr;  // cannot even report: onnxruntime older than 1.16
  Ort::InitApi(api);
  try {
    static Ort::CustomOpDomain domain{kDomain};  // one per process, shared by all sessions
    static const bool filled = [] {
      for (OrtCustomOp* op : all_ops()) domain.Add(op);
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
