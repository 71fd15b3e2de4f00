// The messages of the AMX_ERR_* codes, shared by every library (CPU, CUDA, TensorRT).
#include "amx_cpu.h"

extern "C" const char* amx_cpu_error_string(int code) {
  switch (code) {
    case AMX_OK:
      return "ok";
    case AMX_ERR_FORMAT:
      return "unknown format (known: amxfp4, amxfp4-e4m3, amxfp4-e8m0, mxfp4, nvfp4)";
    case AMX_ERR_SHAPE:
      return "bad shape: sizes must be positive and the blocks must match K";
    case AMX_ERR_ARGUMENT:
      return "a required pointer is null, or a CUDA buffer is not aligned (amx_cuda.h)";
    case AMX_ERR_CUDA:
      return "a CUDA call failed";
    case AMX_ERR_DTYPE:
      return "unknown element type (known: 0 float32, 1 float16, 2 bfloat16)";
    default:
      return "unknown error code";
  }
}
