// Shared by the CUDA translation units (not part of the C ABI): element-type conversion,
// the workspace layout, and the kernels' launch functions.
#pragma once

#if !defined(AMX_CUDA_HOST_EMULATION)  // tests/native/cuda_emulation/ provides these
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <cstdint>

#include "amx/format.h"

namespace amx::cuda {

// ---- element types ---------------------------------------------------------------------------

enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2 };

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Round to nearest even like a Cast; float16 overflow gives +-Inf unless `saturate`
// (FORMAT.md: fake_quant into float16 saturates at +-65504, NaN stays NaN).
template <typename T>
__device__ __forceinline__ T from_float(float v, bool saturate = false);
template <>
__device__ __forceinline__ float from_float<float>(float v, bool) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v, bool saturate) {
  if (saturate && !isnan(v)) v = fminf(fmaxf(v, -65504.0f), 65504.0f);  // fminf drops NaN
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v, bool) {
  return __float2bfloat16_rn(v);
}

// One value of a bias vector of any element type.
__device__ __forceinline__ float load_any(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::Float16:
      return __half2float(static_cast<const __half*>(p)[i]);
    case DType::BFloat16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

// Calls f(T{}) with the C++ type of `t`.
template <typename F>
cudaError_t with_dtype(DType t, F&& f) {
  switch (t) {
    case DType::Float16:
      return f(__half{});
    case DType::BFloat16:
      return f(__nv_bfloat16{});
    default:
      return f(float{});
  }
}

// ---- sizes ----------------------------------------------------------------------------------

inline int64_t blocks_of(int64_t k, const Format& f) { return (k + f.block - 1) / f.block; }
// K rounded up to 32: the activation operands' row length (zero padded), a whole number of
// blocks of every format and of the GEMM's K tile.
inline int64_t padded_k(int64_t k) { return (k + 31) / 32 * 32; }

// Workspace: [0, 256) holds NVFP4's activation amax (float bits, for atomicMax); the
// matmul's activation operand starts at kOperandOffset.
constexpr size_t kOperandOffset = 256;

// M up to this runs the GEMV kernel, above it the GEMM (both on tensor cores).
constexpr int64_t kGemvMaxRows = 256;

// bfloat16 planes that represent activations exactly in the GEMM: a fake-quantized value is
// one bfloat16 (<= 6 significant bits); unquantized float16 needs two, float32 three.
inline int operand_planes(bool quantized, DType t) {
  if (quantized || t == DType::BFloat16) return 1;
  return t == DType::Float16 ? 2 : 3;
}

// ---- launches (quantize.cu, gemv.cu, gemm.cu) ------------------------------------------------

// Writes the largest |x| over the blocks of `f` that hold no NaN/Inf into *amax_bits (which
// the caller zeroed): NVFP4's activation tensor scale is amx::tensor_scale of it.
cudaError_t launch_finite_amax(DType t, const void* x, int64_t rows, int64_t k, const Format& f,
                               unsigned* amax_bits, cudaStream_t stream);

// codes/scales of every block (amx::quantize_block); *g_out <- the tensor scale used.
cudaError_t launch_quantize(DType t, const void* x, int64_t rows, int64_t k, const Format& f,
                            const unsigned* amax_bits, uint8_t* codes, uint8_t* scales,
                            float* g_out, cudaStream_t stream);

// What a kernel writes per activation value after (optional) fake quantization.
enum class OperandKind {
  SameType,   // y [rows, k] in x's type (amx.Quantize), float16 saturating
  BFloat16,   // y [planes, rows, ld] bfloat16 planes, zero padded, NVFP4 g NOT applied (the
              // matmul's epilogue multiplies by it): exact for quantized values and for the
              // bfloat16 split of unquantized ones (the GEMV's and the GEMM's operand)
};

// f == nullptr: no quantization (x as it is). amax_bits: NVFP4's amax (see above).
cudaError_t launch_activation_operand(DType t, const void* x, int64_t rows, int64_t k,
                                      const Format* f, const unsigned* amax_bits,
                                      OperandKind kind, int planes, int64_t ld, void* y,
                                      cudaStream_t stream);

struct WeightArgs {
  const uint8_t* codes;  // [n, nb * B / 2]
  const uint8_t* scales;  // [n, nb, S]
  Format format;
  float tensor_scale;  // NVFP4's g (1 otherwise)
  int64_t n, blocks;
};

struct EpilogueArgs {
  const void* bias;  // [n] or null
  DType bias_type;
  const unsigned* act_amax_bits;  // NVFP4 activations: their g from this amax
  void* y;                        // [m, n] of the output type
  DType y_type;
};

// The GEMV's variants (gemv.cu says how each works), chosen at run time for A/B timing.
// Every one adds the same float32 products in the same order: their outputs are identical.
enum class GemvVariant : int {
  Baseline = 0,     // weights loaded two steps ahead into registers
  Fused = 1,        // + the activation quantization in the GEMV (m <= 8): no operand kernel
  Stream = 2,       // weights streamed through a cp.async ring in shared memory (m <= 16)
  StreamFused = 3,  // both
};
constexpr int kGemvVariants = 4;
constexpr int64_t kFusedMaxRows = 8, kStreamMaxRows = 16;
inline bool fuses(GemvVariant v) { return (int(v) & 1) != 0; }
inline bool streams(GemvVariant v) { return (int(v) & 2) != 0; }
// What runs for m rows: the parts of `v` that cover m.
inline GemvVariant gemv_variant_for(GemvVariant v, int64_t m) {
  const bool fuse = fuses(v) && m <= kFusedMaxRows, stream = streams(v) && m <= kStreamMaxRows;
  return GemvVariant((fuse ? 1 : 0) | (stream ? 2 : 0));
}

// The fused variants read X itself (x's dtype is the output's) and make the operand in the
// lanes that use it, as launch_activation_operand would (f == nullptr: no quantization).
struct FusedActivations {
  const void* x;  // [m, k]
  int64_t k;
  Format format;
  bool quantize;
  const unsigned* amax_bits;  // NVFP4's activation amax
};

// y = sum over planes of a[p] [m, ld] (bfloat16) @ dequant(W without g)^T, times the tensor
// scales, (+ bias): launch_gemv for m <= kGemvMaxRows, launch_gemm for any m. A fused
// variant (gemv_variant_for) takes `fx` instead of `a`.
cudaError_t launch_gemv(const __nv_bfloat16* a, int planes, int64_t m, int64_t ld,
                        const WeightArgs& w, const EpilogueArgs& e, GemvVariant variant,
                        const FusedActivations& fx, cudaStream_t stream);
// The fused variants' launches (gemv_fused.cu, built without FMA contraction like the
// quantizer); launch_gemv calls it.
cudaError_t launch_gemv_fused(int planes, int64_t m, int64_t ld, const WeightArgs& w,
                              const EpilogueArgs& e, bool stream_weights,
                              const FusedActivations& fx, cudaStream_t stream);
cudaError_t launch_gemm(const __nv_bfloat16* a, int planes, int64_t m, int64_t ld,
                        const WeightArgs& w, const EpilogueArgs& e, cudaStream_t stream);

}  // namespace amx::cuda
