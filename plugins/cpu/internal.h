// Shared between the CPU kernels' translation units (not part of the C ABI).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "amx/format.h"
#include "parallel.h"

namespace amx::cpu {

// The kernel tiers, each including the ones before: the CPU's best, or less where
// AMX_CPU_ISA / amx_cpu_set_isa caps it (matmul.cpp).
enum class Isa { Portable, Avx2, AvxVnni, Avx512Vnni };
Isa current_isa();

inline int64_t blocks_of(int64_t k, const Format& f) { return (k + f.block - 1) / f.block; }
inline int64_t code_bytes(int64_t k, const Format& f) { return blocks_of(k, f) * f.block / 2; }

// NVFP4's activation tensor scale: over the blocks holding no NaN/Inf (1 for other formats).
float activation_tensor_scale(const float* x, int64_t rows, int64_t k, const Format& f);

// Quantizes rows of x into packed codes and scale codes (in parallel over rows).
void quantize_rows(const float* x, int64_t rows, int64_t k, const Format& f, float g,
                   uint8_t* codes, uint8_t* scales);

// A float per scale code: the decode table of one scale format (NaN for NaN codes).
struct ScaleTable {
  float value[256];
  explicit ScaleTable(ScaleFormat f) {
    for (int c = 0; c < 256; ++c) value[c] = scale_decode(uint8_t(c), f);
  }
};
// The table of a scale format, built once (building it per call cost 0.4 us of a decode
// step's ~10 us fixed cost).
inline const ScaleTable& scale_table(ScaleFormat f) {
  static const ScaleTable e5m2(ScaleFormat::E5M2), e4m3(ScaleFormat::E4M3),
      e8m0(ScaleFormat::E8M0);
  switch (f) {
    case ScaleFormat::E4M3:
      return e4m3;
    case ScaleFormat::E8M0:
      return e8m0;
    case ScaleFormat::E5M2:
      break;
  }
  return e5m2;
}

// Decodes `count` elements of one block into out[0], out[stride], ...: the values of
// amx/format.h's dequantize_element, with the block's two scales looked up once by the caller.
inline void decode_block(const uint8_t* codes, float scale_pos, float scale_neg, const Format& f,
                         float g, int64_t count, float* out, int64_t stride) {
  static constexpr float kE2M1[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                      -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
  for (int64_t e = 0; e < count; ++e) {
    const uint8_t code = uint8_t((codes[e >> 1] >> ((e & 1) * 4)) & 0xF);
    float v = kE2M1[code] * ((code & 8) && f.scales_per_block == 2 ? scale_neg : scale_pos);
    if (f.tensor_scale) v = v * g;
    out[e * stride] = v;
  }
}

// Activations after quantization, laid out for the integer dot products. For block b of row
// r, 32 bytes per plane: twice the E2M1 magnitude (0..12) of each element in nibble order
// (the 16 low nibbles of the block's codes, then the 16 high nibbles), 0 where the element has
// the other sign; and the block's two decoded scales (times 1/4, which undoes the doubling of
// both operands, and times NVFP4's g).
struct ActivationPlanes {
  int64_t rows = 0, blocks = 0;
  std::vector<uint8_t> pos, neg;          // [rows, blocks, 32]
  std::vector<float> scale_pos, scale_neg;  // [rows, blocks]
  // The blocks with their two scales folded into one (fold_activation_block_*): with each
  // scale written S = M * 2^E (M odd), the block's values are v * 2^Emin with integers
  // v = a * M_side * 2^(E_side - Emin), a the doubled magnitude; where every |v| <= 127 the
  // block is one int8 plane, and the kernel needs half the VPDPBUSDs for it.
  struct Folded {
    std::vector<int8_t> values;  // [rows, blocks, 32], natural order
    std::vector<float> scale;    // [rows, blocks]: 2^Emin, or 0 where the block stays split
  } folded;
  // The blocks as the 256-bit kernels' row tiles take them (M > 1): one signed plane and one
  // scale per "operand row", block by block, rows in order. A folded block is one (its values
  // and 2^Emin), a split block two (the positive plane with its scale, the negative plane
  // with minus its scale: the four sign-pair sums regrouped by activation plane). Copied
  // together, so that a chunk of operand rows is at one address.
  struct Operand {
    uint8_t values[32];
    float scale;
    int64_t acc_offset;  // the row's accumulator in bytes: row * 32 (an address index as is)
    float scale_shifted;  // scale x 2^PackedLayout::fold_shift (AVX2's factored blocks)
  };
  struct Operands {
    std::vector<Operand> list;
    std::vector<int64_t> first;  // [blocks * rows + 1]: (block b, row r)'s first at b * rows + r
    bool shifted = false;  // every scale_shifted exact: the factored blocks may run
  } operands;
  // The 256-bit kernels' one-row kernel (M = 1): row 0's blocks that stay split, in order,
  // then `blocks` (the runs of folded blocks lie between them); split_list fills it.
  std::vector<int64_t> split;
};

// Sizes `out` for rows x nb blocks, planes zeroed.
void size_planes(int64_t rows, int64_t nb, ActivationPlanes* out);
// Block `at` (= row * blocks + block) of x [rows, k] quantized into `out`'s natural-order
// planes (sized): the AVX-512 quantizer, or the scalar one for a block with NaN/Inf and for a
// short last block. 32-element blocks without a tensor scale; `table` decodes f's scales.
void quantize_natural_block(const float* x, int64_t k, const Format& f, const ScaleTable& table,
                            int64_t at, ActivationPlanes* out);
// x [m, k] quantized (with NVFP4's tensor scale) into planes in nibble order (the 16 low
// nibbles' elements of a block, then the 16 high ones): the operand layout of the unpacked
// integer kernels. Block size 32 formats only.
void quantize_activations(const float* x, int64_t m, int64_t k, const Format& f,
                          ActivationPlanes* out);

// y[m, n] for W4A4 with the integer formulation; the ISA-specific versions below.
struct IntMatmulArgs {
  const ActivationPlanes* x;
  const uint8_t* w_codes;   // [n, blocks * 16]
  const uint8_t* w_scales;  // [n, blocks, S]
  int w_scales_per_block;
  const ScaleTable* w_table;
  float w_g;  // NVFP4 weight tensor scale, else 1
  int64_t n;
  const float* bias;
  float* y;  // [rows, n]
};
void int_matmul_portable(const IntMatmulArgs& a, int64_t n_begin, int64_t n_end);

// The float path: a panel of kPanel weight rows dequantized to float32 as panel[k][kPanel],
// multiplied by every activation row.
constexpr int64_t kPanel = 16;
constexpr int64_t kIntPathMaxRows = 8;
// The packed VNNI kernel beats the float panel path at every m measured (4096x4096: 123 vs
// 246 ms at m = 512), so it takes every W4A4 product with 32-element blocks.
struct PanelArgs {
  const float* x;  // [m, k], already fake-quantized (or full precision for weight-only)
  int64_t m, k;
  const float* panel;  // [k, kPanel]
  int64_t n0, cols;    // the panel's first output column and how many are real (<= kPanel)
  const float* bias;
  float* y;  // [m, n]
  int64_t n;
};
void panel_gemm_portable(const PanelArgs& a);
void panel_gemm_avx2(const PanelArgs& a);
// matmul.cpp's dequantize_panel with AVX2, the same values bit for bit: weight rows
// [n0, n0 + kPanel) into panel[k][kPanel], zero past n.
void dequantize_panel_avx2(const uint8_t* w_codes, const uint8_t* w_scales, const Format& wf,
                           const ScaleTable& table, float w_g, int64_t k, int64_t n, int64_t n0,
                           float* panel);
void int_matmul_avx2(const IntMatmulArgs& a, int64_t n_begin, int64_t n_end);
bool cpu_has_avx2();

// The float path at few activation rows (decode): each weight row decoded in registers, as
// dequantize_panel_avx2 decodes it, and multiplied into every row's sums at once, with no
// float32 copy of the weights. Output columns [n_begin, n_end). The activations come permuted
// (permute_for_float_gemv with float_gemv_group's group) and padded with zeros to whole
// blocks. It takes a call whose activations fit 1 MiB (this VM's L2 per core; they are read
// again for every 16 weight rows), or of at most kFloatGemvRows rows; the float32 panels take
// the rest (one thread, AVX-512, ms in registers vs panels: K = 4096 M = 64 35 vs 43, M = 96
// 75 vs 59; K = 2048 M = 128 16 vs 20; K = 11008 M = 24 37 vs 49, M = 48 98 vs 86).
constexpr int64_t kFloatGemvMaxElements = int64_t(1) << 18;
constexpr int64_t kFloatGemvRows = 8;  // activation rows per pass over a weight row
struct FloatGemvArgs {
  const float* x;  // [m, blocks x block], permuted and padded
  int64_t m, k;
  const uint8_t* w_codes;   // [n, code_bytes(k)]
  const uint8_t* w_scales;  // [n, blocks, scales_per_block]
  const Format* wf;
  const ScaleTable* table;
  float w_g;  // NVFP4 weight tensor scale, else 1
  int64_t n;
  const float* bias;
  float* y;  // [m, n]
};
// A permuted activation row's floats: whole blocks, zeros past k (a multiple of 16: every
// row starts 64-byte aligned where the first does).
inline int64_t float_gemv_stride(int64_t k, const Format& wf) {
  return blocks_of(k, wf) * wf.block;
}
// The elements one decode takes (16 for AVX2, 32 for AVX-512 where the block has them).
int64_t float_gemv_group(Isa isa, const Format& wf);
// x [m, k] -> out [m, blocks_of(k) x block]: in each run of `group` elements the even ones,
// then the odd ones (the low and the high nibbles of group / 2 code bytes), zeros past k.
void permute_for_float_gemv(const float* x, int64_t m, int64_t k, const Format& wf,
                            int64_t group, float* out);
void float_gemv_avx2(const FloatGemvArgs& a, int64_t n_begin, int64_t n_end);
void float_gemv_avx512(const FloatGemvArgs& a, int64_t n_begin, int64_t n_end);  // group 32

// ---- prepacked weights for the W4A4 kernels (AVX-512 VNNI, AVX-VNNI, AVX2) ----
//
// `lanes` weight rows ("a group": 16 for 512-bit vectors, 8 for 256-bit ones) share each
// vector of 4 * lanes bytes: for group g, block b and load L (0..3), byte 4*i + p holds, for
// row lanes*g + i, element 32b + 8L + p in its low nibble and element 32b + 8L + 4 + p in its
// high nibble. So one load, a shift and a byte lookup (VPERMB, or VPSHUFB after masking) give
// the values of 4 consecutive k for every row of the group: exactly the operand of VPDPBUSD
// (or VPMADDUBSW + VPMADDWD), which accumulates x[k..k+3] . w[row][k..k+3] into lane = row,
// with no horizontal sums. Rows past n are 0.
struct PackedLayout {
  int64_t n = 0, k = 0, blocks = 0, groups = 0;
  int lanes = 16;
  Isa isa = Isa::Avx512Vnni;  // the kernel tier it was packed for
  std::vector<uint8_t> codes;  // [groups, blocks, 4, 4 * lanes]
  // [groups, blocks, lanes]: the scale codes themselves, one byte each: at M = 1 the kernel is
  // bound by the bytes it reads (16-bit floats were 10% of them, float32 a third). A shift
  // makes a code a float exactly, times `unit`: E5M2 << 8 and E4M3 << 7 are float16 bit
  // patterns (value x 1 and x 2^-8), E8M0 << 23 a float32 one.
  std::vector<uint8_t> scale_pos, scale_neg;
  ScaleFormat scale_format = ScaleFormat::E5M2;
  // what the kernel multiplies the activation scales by: 1 / (the shift's factor x 4), the 4
  // undoing the doubling of both operands' magnitudes
  float unit = 0.25f;
  // AVX-VNNI only (fold_weight_blocks): [groups, blocks, 3, kFoldLanes] bytes, each lane's
  // weight fold factors for the positive and the negative scale and 2^Emin's float32 exponent
  // field, all 0 where the block stays two planes
  std::vector<uint8_t> fold;
  // AVX2 only (fold_window): the weight blocks whose scale codes all lie in [fold_lo,
  // fold_lo + fold_span] have every scale s = f x 2^fold_shift, f an integer from 1 to 255:
  // their rows' two sums combine in int32 (gemv_avx2_kernel.h, chunk_rows). fold_span 0xFF:
  // none do.
  int fold_shift = 0;
  uint8_t fold_lo = 0, fold_span = 0xFF;
};
constexpr int kFoldLanes = 8, kFoldBytes = 3 * kFoldLanes;
// Fills w->fold (8-lane layouts): a block folds where, in each of its rows, its two scales
// written fp x 2^Emin and fn x 2^Emin (fold_factors) make every |value| at most 127.
void fold_weight_blocks(PackedLayout* w);
// Sets w's fold window (fold_shift, fold_lo, fold_span): the shift that the most weight blocks
// share.
void fold_window(PackedLayout* w);
// Fills `out`, or returns false (out left empty) where a scale code has no exact shift form:
// E4M3's NaN, E8M0's NaN and 2^-127 (float32 subnormal); those weights take the unpacked path.
bool pack_weights(const uint8_t* codes, const uint8_t* scales, const Format& f, int64_t n,
                  int64_t k, int lanes, PackedLayout* out);

// Sizes x->folded for x's rows and blocks, every block split.
void size_folded(ActivationPlanes* x);
// Folds block `at` (= row * blocks + block) of x where it can (natural-order planes,
// x->folded sized); a block with NaN/Inf stays split, so its NaN scales reach the output.
void fold_activation_block_avx512(ActivationPlanes* x, int64_t at);
void fold_activation_block_avx2(ActivationPlanes* x, int64_t at);
// Fills x->split from row 0's blocks (x->rows == 1).
void split_list(ActivationPlanes* x);
// Fills x->operands from the planes, folded where they could be.
// `offset` is XORed into every value byte: 0x80 makes them v + 128, unsigned, for a tier whose
// weights are the signed operand (AVX-VNNI's folded weights).
// `shift`: the layout's fold_shift, where it has a fold window (else none: no scale_shifted).
void list_operands(ActivationPlanes* x, uint8_t offset, const int* shift);
// Rows [row_begin, row_end) of y for weight groups [group_begin, group_end). x: activation
// planes in natural order, their scales times w.unit, folded where they could be. The
// AVX-512 kernel takes 16-lane layouts, the AVX-VNNI and AVX2 ones 8-lane layouts.
void packed_gemv_avx512(const PackedLayout& w, const ActivationPlanes& x, const float* bias,
                        float* y, int64_t group_begin, int64_t group_end, int64_t row_begin,
                        int64_t row_end);
void packed_gemv_avx_vnni(const PackedLayout& w, const ActivationPlanes& x, const float* bias,
                          float* y, int64_t group_begin, int64_t group_end, int64_t row_begin,
                          int64_t row_end);
void packed_gemv_avx2(const PackedLayout& w, const ActivationPlanes& x, const float* bias,
                      float* y, int64_t group_begin, int64_t group_end, int64_t row_begin,
                      int64_t row_end);
bool cpu_has_avx512_vnni();
bool cpu_has_avx_vnni();
// amx::quantize_block for a whole 32-element block of a format without a tensor scale; and
// the same block straight to ActivationPlanes' natural-order planes and decoded scales (false,
// nothing written, for a block holding NaN/Inf).
void quantize_block32_avx512(const float* x, const Format& f, uint8_t* codes, uint8_t* scales);
bool quantize_block32_planes_avx512(const float* x, const Format& f, uint8_t* pos, uint8_t* neg,
                                    float* scale_pos, float* scale_neg);
// The same with AVX2 (quantize_avx2.cpp), bit for bit; false, nothing written, for a block
// holding NaN/Inf (the caller takes amx::quantize_block).
bool quantize_block32_avx2(const float* x, const Format& f, uint8_t* codes, uint8_t* scales);
bool quantize_block32_planes_avx2(const float* x, const Format& f, uint8_t* pos, uint8_t* neg,
                                  float* scale_pos, float* scale_neg);
bool cpu_isa_allows_avx512();  // the ISA setting (amx_cpu_set_isa) permits the VNNI kernel

}  // namespace amx::cpu
