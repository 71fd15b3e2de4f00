// Quantize / dequantize / fake-quant of float32 rows (the C ABI of amx_cpu.h), in parallel
// over rows (parallel.h). The per-block numerics are amx/format.h's.
#include <algorithm>
#include <vector>

#include "amx_cpu.h"
#include "internal.h"

namespace amx::cpu {

float activation_tensor_scale(const float* x, int64_t rows, int64_t k, const Format& f) {
  if (!f.tensor_scale) return 1.0f;
  const int64_t nb = blocks_of(k, f), grain = grain_for(rows, k);
  // one maximum per task, then the largest of them: the same value in any order
  const int64_t tasks = tasks_for(rows, grain);
  std::vector<float> task_max(size_t(tasks), 0.0f);
  parallel_for(tasks, [&](int64_t t) {
    const int64_t r_begin = task_begin(t, rows, tasks), r_end = task_begin(t + 1, rows, tasks);
    float amax = 0.0f;
    for (int64_t r = r_begin; r < r_end; ++r) {
      for (int64_t b = 0; b < nb; ++b) {
        const float* v = x + r * k + b * f.block;
        const int64_t n = std::min<int64_t>(f.block, k - b * f.block);
        float block_max = 0.0f;
        bool bad = false;
        for (int64_t i = 0; i < n; ++i) {
          bad |= !is_finite(v[i]);
          const float a = v[i] < 0.0f ? -v[i] : v[i];
          block_max = a > block_max ? a : block_max;
        }
        if (!bad && block_max > amax) amax = block_max;
      }
    }
    task_max[size_t(t)] = amax;
  });
  float amax = 0.0f;
  for (const float m : task_max) amax = m > amax ? m : amax;
  return tensor_scale(amax);
}

void quantize_rows(const float* x, int64_t rows, int64_t k, const Format& f, float g,
                   uint8_t* codes, uint8_t* scales) {
  const int64_t nb = blocks_of(k, f), row_bytes = code_bytes(k, f);
  // whole 32-element blocks with AVX-512 or AVX2 (the scalar loop costs ~40 us for 4096
  // values, most of a decode step's overhead); the rest, NaN/Inf blocks on AVX2, and NVFP4,
  // with the scalar amx:: code
  const bool vector = f.block == 32 && !f.tensor_scale && cpu_isa_allows_avx512();
  const bool avx2 = f.block == 32 && !f.tensor_scale && current_isa() >= Isa::Avx2;
  parallel_ranges(rows, grain_for(rows, k), [&](int64_t r_begin, int64_t r_end) {
    for (int64_t r = r_begin; r < r_end; ++r) {
      for (int64_t b = 0; b < nb; ++b) {
        const int n = int(std::min<int64_t>(f.block, k - b * f.block));
        const float* v = x + r * k + b * f.block;
        uint8_t* c = codes + r * row_bytes + b * f.block / 2;
        uint8_t* s = scales + (r * nb + b) * f.scales_per_block;
        if (vector && n == 32)
          quantize_block32_avx512(v, f, c, s);
        else if (!(avx2 && n == 32 && quantize_block32_avx2(v, f, c, s)))
          quantize_block(v, n, f, g, c, s);
      }
    }
  });
}

void dequantize_rows(const uint8_t* codes, const uint8_t* scales, float g, int64_t rows,
                     int64_t k, const Format& f, float* y) {
  const int64_t nb = blocks_of(k, f), row_bytes = code_bytes(k, f);
  const ScaleTable& table = scale_table(f.scale_format);
  parallel_ranges(rows, grain_for(rows, k), [&](int64_t r_begin, int64_t r_end) {
    for (int64_t r = r_begin; r < r_end; ++r) {
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* s = scales + (r * nb + b) * f.scales_per_block;
        decode_block(codes + r * row_bytes + b * f.block / 2, table.value[s[0]],
                     table.value[s[f.scales_per_block - 1]], f, g,
                     std::min<int64_t>(f.block, k - b * f.block), y + r * k + b * f.block, 1);
      }
    }
  });
}

}  // namespace amx::cpu

using namespace amx;
using namespace amx::cpu;

extern "C" int amx_cpu_quantize(const char* format, const float* x, int64_t rows, int64_t k,
                                uint8_t* codes, uint8_t* scales, float* tensor_scale_out) {
  Format f;
  if (format == nullptr || !format_by_name(format, &f)) return AMX_ERR_FORMAT;
  if (rows <= 0 || k <= 0) return AMX_ERR_SHAPE;
  if (!x || !codes || !scales) return AMX_ERR_ARGUMENT;
  const float g = activation_tensor_scale(x, rows, k, f);
  quantize_rows(x, rows, k, f, g, codes, scales);
  if (tensor_scale_out) *tensor_scale_out = g;
  return AMX_OK;
}

extern "C" int amx_cpu_dequantize(const char* format, const uint8_t* codes,
                                  const uint8_t* scales, float g, int64_t rows, int64_t k,
                                  float* y) {
  Format f;
  if (format == nullptr || !format_by_name(format, &f)) return AMX_ERR_FORMAT;
  if (rows <= 0 || k <= 0) return AMX_ERR_SHAPE;
  if (!codes || !scales || !y) return AMX_ERR_ARGUMENT;
  dequantize_rows(codes, scales, f.tensor_scale ? g : 1.0f, rows, k, f, y);
  return AMX_OK;
}

extern "C" int amx_cpu_fake_quant(const char* format, const float* x, int64_t rows, int64_t k,
                                  float* y) {
  Format f;
  if (format == nullptr || !format_by_name(format, &f)) return AMX_ERR_FORMAT;
  if (rows <= 0 || k <= 0) return AMX_ERR_SHAPE;
  if (!x || !y) return AMX_ERR_ARGUMENT;
  std::vector<uint8_t> codes(size_t(rows * code_bytes(k, f)));
  std::vector<uint8_t> scales(size_t(rows * blocks_of(k, f) * f.scales_per_block));
  const float g = activation_tensor_scale(x, rows, k, f);
  quantize_rows(x, rows, k, f, g, codes.data(), scales.data());
  dequantize_rows(codes.data(), scales.data(), g, rows, k, f, y);
  return AMX_OK;
}
