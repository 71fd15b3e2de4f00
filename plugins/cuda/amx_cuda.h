/* CUDA kernels behind a plain C ABI: the onnxruntime CUDA ops, the TensorRT plugins and the
 * Python tests (ctypes with torch tensors) all call these. Pointers are device pointers;
 * `stream` is a cudaStream_t (NULL: the legacy default stream). Nothing here allocates:
 * callers pass a device workspace of the size the *_workspace functions return (TensorRT
 * plugins must not allocate in enqueue). Formats are amx_export.formats names, as in
 * amx_cpu.h; every function returns AMX_OK or an AMX_ERR_* code. */
#ifndef AMX_CUDA_H_
#define AMX_CUDA_H_

#include <stddef.h>
#include <stdint.h>

#include "amx_cpu.h" /* AMX_API and the AMX_OK / AMX_ERR_* codes */

#ifdef __cplusplus
extern "C" {
#endif

/* Element types of activations, outputs and bias. */
#define AMX_DTYPE_FLOAT32 0
#define AMX_DTYPE_FLOAT16 1
#define AMX_DTYPE_BFLOAT16 2

/* Number of CUDA devices this process can use (0 without a GPU or driver). */
AMX_API int amx_cuda_device_count(void);

/* What went wrong in this thread's last call that returned AMX_ERR_CUDA (or "" if none). */
AMX_API const char* amx_cuda_last_error(void);

/* x [rows, k] of `dtype` -> codes uint8 [rows, nb*B/2], scales uint8 [rows, nb, S], as
 * amx_cpu_quantize; *tensor_scale (a device float) receives NVFP4's g (1 otherwise).
 * Workspace: amx_cuda_quantize_workspace() bytes. */
AMX_API size_t amx_cuda_quantize_workspace(void);
AMX_API int amx_cuda_quantize(const char* format, int dtype, const void* x, int64_t rows,
                              int64_t k, uint8_t* codes, uint8_t* scales, float* tensor_scale,
                              void* workspace, void* stream);

/* y = dequantize(quantize(x)) [rows, k] in x's dtype (float16 saturates at +-65504, like
 * the CPU op). y may alias x. Workspace: amx_cuda_quantize_workspace() bytes. */
AMX_API int amx_cuda_fake_quant(const char* format, int dtype, const void* x, int64_t rows,
                                int64_t k, void* y, void* workspace, void* stream);

/* y [m, n] (x's dtype) = fake_quant(x [m, k], act_format) @ dequant(W, weight_format)^T
 * (+ bias [n] of bias_dtype), float32 accumulation. act_format "none" (or NULL) uses x as it
 * is. W: codes [n, nb*B/2], scales [n, nb, S], weight_tensor_scale for NVFP4. Small m runs a
 * GEMV kernel, larger m a bfloat16 tensor-core GEMM whose products are exact (see
 * plugins/README.md). Workspace: amx_cuda_matmul_workspace(...) bytes for the same m, k.
 * The kernels load weight codes and the workspace 16 bytes and scales 4 bytes at a time:
 * codes and workspace must be 16-byte aligned, scales 4-byte aligned (every CUDA allocator
 * gives 256), or the call returns AMX_ERR_ARGUMENT before any CUDA work. */
AMX_API size_t amx_cuda_matmul_workspace(const char* weight_format, const char* act_format,
                                         int dtype, int64_t m, int64_t k);
AMX_API int amx_cuda_matmul(const char* weight_format, const char* act_format, int dtype,
                            const void* x, int64_t m, int64_t k, const uint8_t* weight_codes,
                            const uint8_t* weight_scales, float weight_tensor_scale, int64_t n,
                            const void* bias, int bias_dtype, void* y, void* workspace,
                            void* stream);

/* The GEMV kernel (m <= 256) that later amx_cuda_matmul calls of this process run, for A/B
 * timing: "baseline", "stream" (m <= 16), "fused" (m <= 8), "stream-fused"; a variant runs
 * its parts only for the m they cover, the rest as "baseline". All give the same result bit
 * for bit. The first default is the AMX_CUDA_GEMV environment variable (unknown or unset:
 * "baseline"). set: AMX_OK, or AMX_ERR_ARGUMENT for an unknown name (nothing changes). */
AMX_API int amx_cuda_set_gemv_variant(const char* name);
AMX_API const char* amx_cuda_gemv_variant(void);

#ifdef __cplusplus
}
#endif

#endif /* AMX_CUDA_H_ */
