/* CPU kernels behind a plain C ABI: onnxruntime, TensorRT and the Python tests (ctypes) all
 * call these, so there is one implementation to test. Formats are amx_export.formats names
 * ("amxfp4", "amxfp4-e4m3", "amxfp4-e8m0", "mxfp4", "nvfp4"). Every function returns 0 on
 * success or an AMX_ERR_* code; amx_cpu_error_string() says what it means. */
#ifndef AMX_CPU_H_
#define AMX_CPU_H_

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define AMX_API __attribute__((visibility("default")))
#else
#define AMX_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define AMX_OK 0
#define AMX_ERR_FORMAT 1    /* unknown format name */
#define AMX_ERR_SHAPE 2     /* a size is zero or negative, or the blocks do not match K */
#define AMX_ERR_ARGUMENT 3  /* a null pointer where data is required, or a misaligned one */
#define AMX_ERR_CUDA 4      /* a CUDA call failed (amx_cuda.h); amx_cuda_last_error() says why */
#define AMX_ERR_DTYPE 5     /* an element type that is not one of AMX_DTYPE_* (amx_cuda.h) */

AMX_API const char* amx_cpu_error_string(int code);

/* The instruction set the matmul dispatches to on this CPU: "avx512-vnni" (AVX-512 F, BW,
 * VNNI and VBMI), "avx-vnni" (AVX2 with the 256-bit VPDPBUSD), "avx2" (with FMA and F16C) or
 * "portable". AMX_CPU_ISA=portable|avx2|avx-vnni in the environment caps it (the CPU's best
 * tier at or below the cap). */
AMX_API const char* amx_cpu_isa(void);

/* Selects "portable", "avx2", "avx-vnni" or "avx512-vnni" (if the CPU has it) for the rest of
 * the process: for tests and benchmarks that compare tiers. Weights packed under one tier take
 * the unpacked path under another. Not thread-safe against running kernels. */
AMX_API int amx_cpu_set_isa(const char* name);

/* The kernels' parallel loops on the calling thread, until changed: each loop calls
 * run(context, fn, tasks, data), which must call fn(data, t) for every t in [0, tasks), on any
 * threads, and return when all have (calling one more than once is harmless). NULL restores the
 * default, the calling thread alone (libamx_ort.so's ops install onnxruntime's intra-op thread
 * pool around each run). Results are the same bit for bit on any number of threads. Other
 * threads' settings are their own. */
typedef void (*amx_parallel_fn)(void* context, void (*fn)(void* data, size_t task), size_t tasks,
                                void* data);
AMX_API void amx_cpu_set_parallel(amx_parallel_fn run, void* context);

/* x: float32 [rows, k] -> codes uint8 [rows, nb*B/2], scales uint8 [rows, nb, S]
 * (nb = ceil(k/B)); tensor_scale receives NVFP4's g (1 for the other formats). */
AMX_API int amx_cpu_quantize(const char* format, const float* x, int64_t rows, int64_t k,
                     uint8_t* codes, uint8_t* scales, float* tensor_scale);

/* codes/scales as above -> y float32 [rows, k]. */
AMX_API int amx_cpu_dequantize(const char* format, const uint8_t* codes, const uint8_t* scales,
                       float tensor_scale, int64_t rows, int64_t k, float* y);

/* y = dequantize(quantize(x)), float32 [rows, k]; y may alias x. */
AMX_API int amx_cpu_fake_quant(const char* format, const float* x, int64_t rows, int64_t k, float* y);

/* y [m, n] = fake_quant(x [m, k], act_format) @ dequant(W, weight_format)^T (+ bias [n]).
 * act_format "none" (or NULL) uses x as it is. W: codes [n, nb*B/2], scales [n, nb, S],
 * weight_tensor_scale for NVFP4 (ignored otherwise). Float32 accumulation. */
AMX_API int amx_cpu_matmul(const char* weight_format, const char* act_format, const float* x,
                   int64_t m, int64_t k, const uint8_t* weight_codes,
                   const uint8_t* weight_scales, float weight_tensor_scale, int64_t n,
                   const float* bias, float* y);

/* Weights packed once for repeated products (onnxruntime packs each node's on its first run):
 * the W4A4 path then reads a layout made for the CPU's dot-product instructions. The
 * original codes and scales must stay alive and unchanged while the handle is used. Returns
 * NULL for bad arguments. */
typedef struct amx_packed_weights amx_packed_weights;
AMX_API amx_packed_weights* amx_cpu_pack_weights(const char* weight_format,
                                                 const uint8_t* weight_codes,
                                                 const uint8_t* weight_scales,
                                                 float weight_tensor_scale, int64_t n, int64_t k);
AMX_API void amx_cpu_free_packed(amx_packed_weights* packed);
/* As amx_cpu_matmul, with the weights (and N, K) of the handle. */
AMX_API int amx_cpu_matmul_packed(const amx_packed_weights* weights, const char* act_format,
                                  const float* x, int64_t m, const float* bias, float* y);

#ifdef __cplusplus
}
#endif

#endif /* AMX_CPU_H_ */
