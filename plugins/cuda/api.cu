// The C ABI of amx_cuda.h: argument checks, workspace layout and the choice of kernel.
#include <atomic>
#include <cstdlib>
#include <string>

#include "amx_cuda.h"
#include "device.cuh"

using amx::Format;
using namespace amx::cuda;

namespace {

thread_local std::string last_error;

int cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return AMX_OK;
  last_error = std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
  return AMX_ERR_CUDA;
}

bool known_dtype(int t) {
  return t == AMX_DTYPE_FLOAT32 || t == AMX_DTYPE_FLOAT16 || t == AMX_DTYPE_BFLOAT16;
}

// The activation format: false for an unknown name; *quantize false for "none" / NULL.
bool act_format(const char* name, Format* f, bool* quantize) {
  *quantize = !(name == nullptr || std::string(name) == "none");
  return !*quantize || amx::format_by_name(name, f);
}

bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

unsigned* amax_slot(void* workspace) { return static_cast<unsigned*>(workspace); }

void* operand_slot(void* workspace) { return static_cast<char*>(workspace) + kOperandOffset; }

// NVFP4: zeroes the amax slot and fills it. Other formats never read it (a memset would
// cost a graph node per call).
int activation_amax(DType t, const void* x, int64_t rows, int64_t k, const Format& f,
                    void* workspace, cudaStream_t stream) {
  if (!f.tensor_scale) return AMX_OK;
  int rc = cuda_status(cudaMemsetAsync(workspace, 0, sizeof(unsigned), stream), "cudaMemsetAsync");
  if (rc == AMX_OK)
    rc = cuda_status(launch_finite_amax(t, x, rows, k, f, amax_slot(workspace), stream),
                     "amax kernel");
  return rc;
}

constexpr const char* kGemvVariantNames[kGemvVariants] = {"baseline", "fused", "stream",
                                                          "stream-fused"};

int gemv_variant_by_name(const char* name) {
  for (int v = 0; name != nullptr && v < kGemvVariants; ++v)
    if (std::string(name) == kGemvVariantNames[v]) return v;
  return -1;
}

// The process's GEMV variant: AMX_CUDA_GEMV when first asked (an unknown name: baseline),
// then what amx_cuda_set_gemv_variant says.
std::atomic<int>& gemv_variant() {
  static std::atomic<int> variant{[] {
    const int v = gemv_variant_by_name(std::getenv("AMX_CUDA_GEMV"));
    return v < 0 ? 0 : v;
  }()};
  return variant;
}

}  // namespace

extern "C" int amx_cuda_set_gemv_variant(const char* name) {
  const int v = gemv_variant_by_name(name);
  if (v < 0) return AMX_ERR_ARGUMENT;
  gemv_variant().store(v);
  return AMX_OK;
}

extern "C" const char* amx_cuda_gemv_variant(void) { return kGemvVariantNames[gemv_variant()]; }

extern "C" int amx_cuda_device_count(void) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it
    return 0;
  }
  return count;
}

extern "C" const char* amx_cuda_last_error(void) { return last_error.c_str(); }

extern "C" size_t amx_cuda_quantize_workspace(void) { return kOperandOffset; }

extern "C" int amx_cuda_quantize(const char* format, int dtype, const void* x, int64_t rows,
                                 int64_t k, uint8_t* codes, uint8_t* scales, float* tensor_scale,
                                 void* workspace, void* stream) {
  Format f;
  if (format == nullptr || !amx::format_by_name(format, &f)) return AMX_ERR_FORMAT;
  if (!known_dtype(dtype)) return AMX_ERR_DTYPE;
  if (rows <= 0 || k <= 0) return AMX_ERR_SHAPE;
  if (!x || !codes || !scales || !workspace) return AMX_ERR_ARGUMENT;
  const DType t = DType(dtype);
  const auto s = static_cast<cudaStream_t>(stream);
  int rc = activation_amax(t, x, rows, k, f, workspace, s);
  if (rc == AMX_OK)
    rc = cuda_status(launch_quantize(t, x, rows, k, f, amax_slot(workspace), codes, scales,
                                     tensor_scale, s),
                     "quantize kernel");
  return rc;
}

extern "C" int amx_cuda_fake_quant(const char* format, int dtype, const void* x, int64_t rows,
                                   int64_t k, void* y, void* workspace, void* stream) {
  Format f;
  if (format == nullptr || !amx::format_by_name(format, &f)) return AMX_ERR_FORMAT;
  if (!known_dtype(dtype)) return AMX_ERR_DTYPE;
  if (rows <= 0 || k <= 0) return AMX_ERR_SHAPE;
  if (!x || !y || !workspace) return AMX_ERR_ARGUMENT;
  const DType t = DType(dtype);
  const auto s = static_cast<cudaStream_t>(stream);
  int rc = activation_amax(t, x, rows, k, f, workspace, s);
  if (rc == AMX_OK)
    rc = cuda_status(launch_activation_operand(t, x, rows, k, &f, amax_slot(workspace),
                                               OperandKind::SameType, 1, k, y, s),
                     "fake-quant kernel");
  return rc;
}

extern "C" size_t amx_cuda_matmul_workspace(const char* /*weight_format*/, const char* act,
                                            int dtype, int64_t m, int64_t k) {
  Format af;
  bool quantize = false;
  if (!act_format(act, &af, &quantize) || !known_dtype(dtype) || m < 0 || k <= 0) return 0;
  // both kernels take the same operand; it grows with m, so TensorRT's sizing for its
  // largest m covers every smaller one
  const int planes = operand_planes(quantize, DType(dtype));
  return kOperandOffset + size_t(planes) * size_t(m * padded_k(k)) * sizeof(__nv_bfloat16);
}

extern "C" int amx_cuda_matmul(const char* weight_format, const char* act, int dtype,
                               const void* x, int64_t m, int64_t k, const uint8_t* weight_codes,
                               const uint8_t* weight_scales, float weight_tensor_scale,
                               int64_t n, const void* bias, int bias_dtype, void* y,
                               void* workspace, void* stream) {
  Format wf, af;
  bool quantize = false;
  if (weight_format == nullptr || !amx::format_by_name(weight_format, &wf) ||
      !act_format(act, &af, &quantize))
    return AMX_ERR_FORMAT;
  if (!known_dtype(dtype) || (bias != nullptr && !known_dtype(bias_dtype))) return AMX_ERR_DTYPE;
  if (m < 0 || k <= 0 || n <= 0) return AMX_ERR_SHAPE;
  if (m == 0) return AMX_OK;
  if (!x || !weight_codes || !weight_scales || !y || !workspace) return AMX_ERR_ARGUMENT;
  if (!aligned(weight_codes, 16) || !aligned(weight_scales, 4) || !aligned(workspace, 16))
    return AMX_ERR_ARGUMENT;

  const DType t = DType(dtype);
  const auto s = static_cast<cudaStream_t>(stream);
  const int64_t ld = padded_k(k);
  const WeightArgs w{weight_codes, weight_scales, wf, wf.tensor_scale ? weight_tensor_scale : 1.0f,
                     n, blocks_of(k, wf)};
  EpilogueArgs e{bias, DType(bias_dtype), nullptr, y, t};
  int rc = quantize ? activation_amax(t, x, m, k, af, workspace, s) : AMX_OK;
  const Format* af_or_null = quantize ? &af : nullptr;
  if (rc != AMX_OK) return rc;

  const int planes = operand_planes(quantize, t);
  auto* a = static_cast<__nv_bfloat16*>(operand_slot(workspace));
  const GemvVariant variant = GemvVariant(gemv_variant().load());
  // a fused GEMV makes the operand itself: no activation kernel
  if (m > kGemvMaxRows || !fuses(gemv_variant_for(variant, m)))
    rc = cuda_status(launch_activation_operand(t, x, m, k, af_or_null, amax_slot(workspace),
                                               OperandKind::BFloat16, planes, ld, a, s),
                     "activation kernel");
  if (quantize && af.tensor_scale) e.act_amax_bits = amax_slot(workspace);
  const FusedActivations fx{x, k, quantize ? af : amx::kMxfp4, quantize, amax_slot(workspace)};
  if (rc == AMX_OK && m <= kGemvMaxRows)
    return cuda_status(launch_gemv(a, planes, m, ld, w, e, variant, fx, s), "GEMV kernel");
  if (rc == AMX_OK) rc = cuda_status(launch_gemm(a, planes, m, ld, w, e, s), "GEMM kernel");
  return rc;
}
