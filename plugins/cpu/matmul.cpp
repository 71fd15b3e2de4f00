// amx_cpu_matmul: y = fake_quant(x) @ dequant(W)^T (+ bias), with run-time ISA dispatch.
//
// W4A4 with 32-element blocks (AMXFP4 variants, MXFP4) takes the integer path: E2M1 values
// times 2 are the integers {0,1,2,3,4,6,8,12}, so within a block the dot product of two
// quantized vectors splits into four exact integer sums, one per (activation sign, weight
// sign) pair, each scaled once by the product of the two scales it uses:
//   block = Spp*P(+,+) - Spn*P(+,-) - Snp*P(-,+) + Snn*P(-,-),  Sxy = Sx_x * Sw_y / 4.
// Each term is exact in float32 (an integer below 2^13 times two 3-bit-mantissa scales), so
// the result differs from fake_quant(x) @ dequant(W)^T only by the order of the float32 sum
// over blocks. Everything else (NVFP4's 16-element blocks, weight-only) takes float32 dot
// products with W decoded as dequantize does: for few rows in registers (float_gemv_kernel.h,
// kFloatGemvMaxElements), else into float32 panels of W first.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "amx_cpu.h"
#include "internal.h"

namespace amx::cpu {

namespace {

constexpr const char* kIsaNames[] = {"portable", "avx2", "avx-vnni", "avx512-vnni"};

bool cpu_has(Isa level) {
  switch (level) {
    case Isa::Portable:
      return true;
    case Isa::Avx2:
      return cpu_has_avx2();
    case Isa::AvxVnni:
      return cpu_has_avx2() && cpu_has_avx_vnni();
    case Isa::Avx512Vnni:
      return cpu_has_avx2() && cpu_has_avx512_vnni();
  }
  return false;
}

// The best tier of this CPU at or below AMX_CPU_ISA (a CPU with AVX-512 but no AVX-VNNI,
// capped at avx-vnni, runs avx2).
Isa detect_isa() {
  const char* cap = std::getenv("AMX_CPU_ISA");
  int level = int(Isa::Avx512Vnni);
  for (int i = 0; cap && i <= int(Isa::Avx512Vnni); ++i)
    if (std::strcmp(cap, kIsaNames[i]) == 0) level = i;
  for (; level > 0 && !cpu_has(Isa(level)); --level) {
  }
  return Isa(level);
}

Isa& isa_setting() {
  static Isa chosen = detect_isa();
  return chosen;
}

Isa isa() { return isa_setting(); }

// 2*|E2M1| of a code when its sign matches the plane (positive plane: codes 0-7).
constexpr uint8_t kDoubledMagnitude[8] = {0, 1, 2, 3, 4, 6, 8, 12};

// Dequantizes weight rows [n0, n0 + kPanel) into panel[k][kPanel] (zero past n).
void dequantize_panel(const uint8_t* w_codes, const uint8_t* w_scales, const Format& wf,
                      const ScaleTable& table, float w_g, int64_t k, int64_t n, int64_t n0,
                      float* panel) {
  const int64_t nb = blocks_of(k, wf), row_bytes = code_bytes(k, wf);
  for (int64_t c = 0; c < kPanel; ++c) {
    const int64_t j = n0 + c;
    if (j >= n) {
      for (int64_t i = 0; i < k; ++i) panel[i * kPanel + c] = 0.0f;
      continue;
    }
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* s = w_scales + (j * nb + b) * wf.scales_per_block;
      decode_block(w_codes + j * row_bytes + b * wf.block / 2, table.value[s[0]],
                   table.value[s[wf.scales_per_block - 1]], wf, w_g,
                   std::min<int64_t>(wf.block, k - b * wf.block),
                   panel + b * wf.block * kPanel + c, kPanel);
    }
  }
}

}  // namespace

int64_t float_gemv_group(Isa level, const Format& wf) {
  return level == Isa::Avx512Vnni && wf.block % 32 == 0 ? 32 : 16;
}

void permute_for_float_gemv(const float* x, int64_t m, int64_t k, const Format& wf,
                            int64_t group, float* out) {
  const int64_t stride = float_gemv_stride(k, wf), half = group / 2;
  for (int64_t r = 0; r < m; ++r) {
    const float* row = x + r * k;
    float* to = out + r * stride;
    for (int64_t g0 = 0; g0 < stride; g0 += group)  // stride is whole runs (blocks)
      for (int64_t i = 0; i < half; ++i) {
        const int64_t even = g0 + 2 * i;
        to[g0 + i] = even < k ? row[even] : 0.0f;
        to[g0 + half + i] = even + 1 < k ? row[even + 1] : 0.0f;
      }
  }
}

namespace {

void float_matmul(const float* x, int64_t m, int64_t k, const uint8_t* w_codes,
                  const uint8_t* w_scales, const Format& wf, float w_g, int64_t n,
                  const float* bias, float* y) {
  const bool avx2 = isa() >= Isa::Avx2;
  const ScaleTable& table = scale_table(wf.scale_format);
  if (avx2 && (m * k <= kFloatGemvMaxElements || m <= kFloatGemvRows)) {  // no copy of W
    const int64_t group = float_gemv_group(isa(), wf);
    // 64-byte aligned: at malloc's 16 every 512-bit load of it splits two cache lines
    // (4096x4096, one thread, AVX-512: M = 8 4.9 -> 3.8 ms, M = 32 19.3 -> 14.6 ms)
    std::vector<float> buffer(size_t(m * float_gemv_stride(k, wf) + 16));
    const uintptr_t past = reinterpret_cast<uintptr_t>(buffer.data()) / 4 % 16;  // floats
    float* permuted = buffer.data() + (16 - past) % 16;
    permute_for_float_gemv(x, m, k, wf, group, permuted);
    const FloatGemvArgs args{permuted, m, k, w_codes, w_scales, &wf, &table, w_g, n, bias, y};
    parallel_ranges(n, grain_for_macs(m * k), [&](int64_t n0, int64_t n1) {
      (group == 32 ? float_gemv_avx512 : float_gemv_avx2)(args, n0, n1);
    });
    return;
  }
  const int64_t panels = (n + kPanel - 1) / kPanel;
  parallel_ranges(panels, grain_for(panels, kPanel * k), [&](int64_t p_begin, int64_t p_end) {
    std::vector<float> panel(size_t(kPanel * k));
    for (int64_t p = p_begin; p < p_end; ++p) {
      const int64_t n0 = p * kPanel;
      (avx2 ? dequantize_panel_avx2 : dequantize_panel)(w_codes, w_scales, wf, table, w_g, k, n,
                                                         n0, panel.data());
      const PanelArgs args{x, m, k, panel.data(), n0, std::min(kPanel, n - n0), bias, y, n};
      if (avx2)
        panel_gemm_avx2(args);
      else
        panel_gemm_portable(args);
    }
  });
}

}  // namespace

void size_planes(int64_t rows, int64_t nb, ActivationPlanes* out) {
  out->rows = rows;
  out->blocks = nb;
  out->pos.assign(size_t(rows * nb * 32), 0);
  out->neg.assign(size_t(rows * nb * 32), 0);
  out->scale_pos.resize(size_t(rows * nb));
  out->scale_neg.resize(size_t(rows * nb));
}

namespace {

// Element order within a block's planes: nibble order for the unpacked integer kernels,
// natural k order for the packed VNNI kernel.
enum class PlaneOrder { Nibble, Natural };

// Block `at` (= row * nb + block) of the planes from its codes c and scale codes s.
void expand_block(const uint8_t* c, const uint8_t* s, const ScaleTable& table, const Format& f,
                  float g, PlaneOrder order, int64_t at, ActivationPlanes* out) {
  uint8_t* pos = out->pos.data() + at * 32;
  uint8_t* neg = out->neg.data() + at * 32;
  for (int j = 0; j < 32; ++j) {
    const int e = order == PlaneOrder::Natural ? j : (j < 16 ? 2 * j : 2 * (j - 16) + 1);
    const uint8_t code = uint8_t((c[e >> 1] >> ((e & 1) * 4)) & 0xF);
    (code & 8 ? neg : pos)[j] = kDoubledMagnitude[code & 7];
  }
  float sp = table.value[s[0]], sn = table.value[s[f.scales_per_block - 1]];
  if (f.tensor_scale) sp *= g, sn *= g;
  out->scale_pos[size_t(at)] = sp;
  out->scale_neg[size_t(at)] = sn;
}

}  // namespace

void quantize_natural_block(const float* x, int64_t k, const Format& f, const ScaleTable& table,
                            int64_t at, ActivationPlanes* out) {
  const int64_t nb = out->blocks, r = at / nb, b = at % nb;
  const int64_t n = std::min<int64_t>(32, k - b * 32);
  const float* v = x + r * k + b * 32;
  auto planes = isa() == Isa::Avx512Vnni ? quantize_block32_planes_avx512
                                          : quantize_block32_planes_avx2;
  if (n == 32 && planes(v, f, out->pos.data() + at * 32, out->neg.data() + at * 32,
                        &out->scale_pos[size_t(at)], &out->scale_neg[size_t(at)]))
    return;
  uint8_t codes[16] = {}, scales[2] = {};
  quantize_block(v, int(n), f, 1.0f, codes, scales);
  expand_block(codes, scales, table, f, 1.0f, PlaneOrder::Natural, at, out);
}

namespace {

// The nibble-order planes of quantized activations (codes and scale codes, [rows, blocks]).
void expand_activations(const uint8_t* codes, const uint8_t* scales, float g, int64_t rows,
                        int64_t k, const Format& f, ActivationPlanes* out) {
  const int64_t nb = blocks_of(k, f);
  size_planes(rows, nb, out);
  const ScaleTable& table = scale_table(f.scale_format);
  parallel_ranges(rows, grain_for(rows, k), [&](int64_t r_begin, int64_t r_end) {
    for (int64_t r = r_begin; r < r_end; ++r)
      for (int64_t b = 0; b < nb; ++b)
        expand_block(codes + (r * nb + b) * 16, scales + (r * nb + b) * f.scales_per_block,
                     table, f, g, PlaneOrder::Nibble, r * nb + b, out);
  });
}

}  // namespace

void panel_gemm_portable(const PanelArgs& a) {
  for (int64_t r = 0; r < a.m; ++r) {
    float acc[kPanel] = {};
    const float* xr = a.x + r * a.k;
    for (int64_t i = 0; i < a.k; ++i)
      for (int64_t c = 0; c < kPanel; ++c) acc[c] += xr[i] * a.panel[i * kPanel + c];
    for (int64_t c = 0; c < a.cols; ++c)
      a.y[r * a.n + a.n0 + c] = acc[c] + (a.bias ? a.bias[a.n0 + c] : 0.0f);
  }
}

void quantize_activations(const float* x, int64_t m, int64_t k, const Format& f,
                          ActivationPlanes* out) {
  std::vector<uint8_t> codes(size_t(m * code_bytes(k, f)));
  std::vector<uint8_t> scales(size_t(m * blocks_of(k, f) * f.scales_per_block));
  const float g = activation_tensor_scale(x, m, k, f);
  quantize_rows(x, m, k, f, g, codes.data(), scales.data());
  expand_activations(codes.data(), scales.data(), g, m, k, f, out);
}

void int_matmul_portable(const IntMatmulArgs& a, int64_t n_begin, int64_t n_end) {
  const ActivationPlanes& x = *a.x;
  const int64_t nb = x.blocks;
  for (int64_t j = n_begin; j < n_end; ++j) {
    const uint8_t* wc = a.w_codes + j * nb * 16;
    const uint8_t* ws = a.w_scales + j * nb * a.w_scales_per_block;
    for (int64_t r = 0; r < x.rows; ++r) {
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* xp = x.pos.data() + (r * nb + b) * 32;
        const uint8_t* xn = x.neg.data() + (r * nb + b) * 32;
        int32_t pp = 0, pn = 0, np = 0, nn = 0;
        for (int i = 0; i < 32; ++i) {
          const uint8_t code = i < 16 ? (wc[b * 16 + i] & 0xF) : (wc[b * 16 + i - 16] >> 4);
          const int32_t w = kDoubledMagnitude[code & 7];
          if (code & 8) {
            pn += xp[i] * w;
            nn += xn[i] * w;
          } else {
            pp += xp[i] * w;
            np += xn[i] * w;
          }
        }
        const float swp = a.w_table->value[ws[b * a.w_scales_per_block]] * a.w_g * 0.25f;
        const float swn =
            a.w_table->value[ws[b * a.w_scales_per_block + a.w_scales_per_block - 1]] * a.w_g *
            0.25f;
        const float sxp = x.scale_pos[size_t(r * nb + b)], sxn = x.scale_neg[size_t(r * nb + b)];
        acc += float(pp) * (sxp * swp) - float(pn) * (sxp * swn) - float(np) * (sxn * swp) +
               float(nn) * (sxn * swn);
      }
      a.y[r * a.n + j] = acc + (a.bias ? a.bias[j] : 0.0f);
    }
  }
}

}  // namespace amx::cpu

using namespace amx;
using namespace amx::cpu;

bool amx::cpu::cpu_isa_allows_avx512() { return isa() == Isa::Avx512Vnni; }
Isa amx::cpu::current_isa() { return isa(); }

extern "C" const char* amx_cpu_isa(void) { return kIsaNames[int(isa())]; }

extern "C" int amx_cpu_set_isa(const char* name) {
  if (name == nullptr) return AMX_ERR_ARGUMENT;
  for (int i = 0; i <= int(Isa::Avx512Vnni); ++i) {
    if (std::strcmp(name, kIsaNames[i]) == 0 && cpu_has(Isa(i))) {
      isa_setting() = Isa(i);
      return AMX_OK;
    }
  }
  return AMX_ERR_ARGUMENT;
}

extern "C" int amx_cpu_matmul(const char* weight_format, const char* act_format, const float* x,
                              int64_t m, int64_t k, const uint8_t* weight_codes,
                              const uint8_t* weight_scales, float weight_tensor_scale, int64_t n,
                              const float* bias, float* y) {
  Format wf, af;
  if (weight_format == nullptr || !format_by_name(weight_format, &wf)) return AMX_ERR_FORMAT;
  const bool quantize_x = act_format != nullptr && std::strcmp(act_format, "none") != 0;
  if (quantize_x && !format_by_name(act_format, &af)) return AMX_ERR_FORMAT;
  if (m <= 0 || k <= 0 || n <= 0) return AMX_ERR_SHAPE;
  if (!x || !weight_codes || !weight_scales || !y) return AMX_ERR_ARGUMENT;
  const float w_g = wf.tensor_scale ? weight_tensor_scale : 1.0f;

  // the integer path moves 4x fewer weight bytes: it wins while the product is bound by
  // memory (decode, small m); past that the float panel GEMM does 8 MACs per instruction,
  // but with 256-bit vectors only the integer kernel is still faster (4096x4096, m = 16, one
  // thread: 18 vs 74 ms, the float path decoding every weight)
  const bool int_any_m = isa() == Isa::Avx2 || isa() == Isa::AvxVnni;
  if (quantize_x && af.block == 32 && wf.block == 32 && (m < kIntPathMaxRows || int_any_m)) {
    ActivationPlanes planes;
    quantize_activations(x, m, k, af, &planes);
    const ScaleTable& w_table = scale_table(wf.scale_format);
    const IntMatmulArgs args{&planes, weight_codes, weight_scales, wf.scales_per_block,
                             &w_table, w_g, n, bias, y};
    const bool avx2 = isa() >= Isa::Avx2;
    parallel_ranges(n, grain_for_macs(m * k), [&](int64_t n0, int64_t n1) {
      if (avx2)
        int_matmul_avx2(args, n0, n1);
      else
        int_matmul_portable(args, n0, n1);
    });
    return AMX_OK;
  }

  const float* xq = x;
  std::vector<float> fake;
  if (quantize_x) {
    fake.resize(size_t(m * k));
    const int rc = amx_cpu_fake_quant(act_format, x, m, k, fake.data());
    if (rc != AMX_OK) return rc;
    xq = fake.data();
  }
  float_matmul(xq, m, k, weight_codes, weight_scales, wf, w_g, n, bias, y);
  return AMX_OK;
}
