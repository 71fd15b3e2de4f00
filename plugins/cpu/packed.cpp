// Prepacked weights (internal.h's PackedLayout) and the C ABI that uses them: pack once, then
// amx_cpu_matmul_packed on every call. onnxruntime's op packs each node's weights on its
// first run. W4A4 with 32-element blocks takes the AVX-512 VNNI kernel where the CPU has it
// (faster than the float panel path at every m measured); everything else
// falls back to amx_cpu_matmul on the original codes and scales.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "amx_cpu.h"
#include "internal.h"

namespace amx::cpu {

namespace {

// float16 bits of v, which must be exactly representable (a decoded E5M2/E4M3 scale / 4:
// at most 4 significant bits, within float16's range); NaN stays NaN.
uint16_t float16_bits(float v) {
  const uint32_t b = float_bits(v);
  const uint16_t sign = uint16_t((b >> 16) & 0x8000u);
  if (!is_finite(v)) return uint16_t(sign | 0x7E00u);
  const float a = v < 0.0f ? -v : v;
  if (a == 0.0f) return sign;
  const int e = int((b >> 23) & 0xFF) - 127;
  if (e < -14) return uint16_t(sign | uint16_t(a * exp2i(24)));  // subnormal: a / 2^-24
  return uint16_t(sign | uint16_t((e + 15) << 10) | uint16_t((b >> 13) & 0x3FFu));
}

uint16_t scale_bits(float v, bool bf16) {
  return bf16 ? uint16_t(float_bits(v) >> 16) : float16_bits(v);
}

}  // namespace


void pack_weights(const uint8_t* codes, const uint8_t* scales, const Format& f, float g,
                  int64_t n, int64_t k, PackedLayout* out) {
  const int64_t nb = blocks_of(k, f), row_bytes = code_bytes(k, f);
  out->n = n;
  out->k = k;
  out->blocks = nb;
  out->groups = (n + 15) / 16;
  out->codes.assign(size_t(out->groups * nb * 256), 0);
  out->scale_pos.assign(size_t(out->groups * nb * 16), 0);
  out->scale_neg.assign(size_t(out->groups * nb * 16), 0);
  out->bf16_scales = f.scale_format == ScaleFormat::E8M0;
  const ScaleTable table(f.scale_format);
  auto code_of = [&](int64_t row, int64_t e) {
    return uint8_t((codes[row * row_bytes + (e >> 1)] >> ((e & 1) * 4)) & 0xF);
  };
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < n; ++row) {
    const int64_t grp = row / 16, lane = row % 16;
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* dst = out->codes.data() + (grp * nb + b) * 256;
      for (int l = 0; l < 4; ++l)
        for (int p = 0; p < 4; ++p) {
          const int64_t e = b * 32 + 8 * l + p;
          dst[l * 64 + lane * 4 + p] = uint8_t(code_of(row, e) | (code_of(row, e + 4) << 4));
        }
      const uint8_t* s = scales + (row * nb + b) * f.scales_per_block;
      const size_t at = size_t((grp * nb + b) * 16 + lane);
      out->scale_pos[at] = scale_bits(table.value[s[0]] * g * 0.25f, out->bf16_scales);
      out->scale_neg[at] = scale_bits(table.value[s[f.scales_per_block - 1]] * g * 0.25f,
                                      out->bf16_scales);
    }
  }
}

}  // namespace amx::cpu

using namespace amx;
using namespace amx::cpu;

struct amx_packed_weights {
  std::string weight_format;
  Format format{};
  const uint8_t* codes = nullptr;  // the caller's, kept alive by the caller
  const uint8_t* scales = nullptr;
  float tensor_scale = 1.0f;
  PackedLayout layout;  // empty when the CPU or the format has no packed kernel
};

extern "C" amx_packed_weights* amx_cpu_pack_weights(const char* weight_format,
                                                    const uint8_t* codes, const uint8_t* scales,
                                                    float weight_tensor_scale, int64_t n,
                                                    int64_t k) {
  Format f;
  if (weight_format == nullptr || !format_by_name(weight_format, &f) || n <= 0 || k <= 0 ||
      !codes || !scales)
    return nullptr;
  auto packed = std::make_unique<amx_packed_weights>();
  packed->weight_format = weight_format;
  packed->format = f;
  packed->codes = codes;
  packed->scales = scales;
  packed->tensor_scale = f.tensor_scale ? weight_tensor_scale : 1.0f;
  // 32-element blocks without a tensor scale: the scales are then exact in 16 bits
  if (f.block == 32 && !f.tensor_scale && cpu_has_avx512_vnni() && cpu_isa_allows_avx512())
    pack_weights(codes, scales, f, packed->tensor_scale, n, k, &packed->layout);
  packed->layout.n = n;
  packed->layout.k = k;
  return packed.release();
}

extern "C" void amx_cpu_free_packed(amx_packed_weights* packed) { delete packed; }

extern "C" int amx_cpu_matmul_packed(const amx_packed_weights* w, const char* act_format,
                                     const float* x, int64_t m, const float* bias, float* y) {
  if (w == nullptr || x == nullptr || y == nullptr) return AMX_ERR_ARGUMENT;
  const int64_t n = w->layout.n, k = w->layout.k;
  Format af;
  const bool quantize_x = act_format != nullptr && std::strcmp(act_format, "none") != 0;
  if (quantize_x && !format_by_name(act_format, &af)) return AMX_ERR_FORMAT;
  if (m <= 0) return AMX_ERR_SHAPE;
  const bool packed_path = !w->layout.codes.empty() && quantize_x && af.block == 32 &&
                           cpu_isa_allows_avx512();
  if (!packed_path)
    return amx_cpu_matmul(w->weight_format.c_str(), act_format, x, m, k, w->codes, w->scales,
                          w->tensor_scale, n, bias, y);
  ActivationPlanes planes;
  quantize_activations(x, m, k, af, PlaneOrder::Natural, &planes);
  const int64_t groups = w->layout.groups;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t grp = 0; grp < groups; ++grp)
      packed_gemv_avx512(w->layout, planes, bias, y, grp, grp + 1);
  }
  return AMX_OK;
}
