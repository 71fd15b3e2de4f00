// The packed W4A4 kernel on 256-bit vectors, for two tiers that differ only in their integer
// dot product: gemv_avx2.cpp (VPMADDUBSW + VPADDW, one VPMADDWD per block and plane) and
// gemv_avx_vnni.cpp (VPDPBUSD ymm). Each includes this file with its own compiler flags; all of
// it has internal linkage, so no copy built for one tier is linked into the other.
//
// The formulation is gemv_avx512.cpp's, on 8-lane groups (PackedLayout, lanes = 8): one int32
// lane per weight row, four exact integer sums per split activation block (activation sign x
// weight sign) and two per folded one, each scaled once. E2M1 has 16 codes, so a 16-byte
// table per 128-bit lane is exactly VPSHUFB's shape: one lookup per sign plane, after masking
// the nibble (VPSHUFB zeroes a byte whose index has bit 7 set).
#pragma once

#include <immintrin.h>

#include "internal.h"

namespace amx::cpu {
namespace {

constexpr int kLanes = 8;
constexpr int64_t kBlockBytes = 16 * kLanes;  // a group's codes of one block: 4 loads of 32

// The four weight operands of one 32-byte load: 2|E2M1| (0..12) of the positive codes (0 for
// the negative ones) and of the negative codes, for the low and the high nibbles.
struct WeightPlanes {
  __m256i pos_lo, neg_lo, pos_hi, neg_hi;
};

inline WeightPlanes decode_load(const uint8_t* codes) {
  const __m256i pos_table = _mm256_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0,
                                             0, 1, 2, 3, 4, 6, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i neg_table = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 6, 8, 12,
                                             0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 6, 8, 12);
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes));
  const __m256i lo = _mm256_and_si256(v, nibble);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
  return {_mm256_shuffle_epi8(pos_table, lo), _mm256_shuffle_epi8(neg_table, lo),
          _mm256_shuffle_epi8(pos_table, hi), _mm256_shuffle_epi8(neg_table, hi)};
}

// Where a block's weight operands come from: decoded from the packed codes as they are used
// (one activation row: nothing to share them with), or from a block decoded once into L1 for
// every row of a tile (16 registers would be all AVX2 has).
struct FromCodes {
  const uint8_t* codes;
  WeightPlanes operator()(int l) const { return decode_load(codes + 32 * l); }
};
struct FromBuffer {
  const WeightPlanes* planes;
  WeightPlanes operator()(int l) const { return planes[l]; }
};

inline __m256i broadcast4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm256_set1_epi32(v);
}

// 8 scale codes as float32, the scales times 1 / (4 unit) (PackedLayout).
inline __m256 load_scales(ScaleFormat f, const uint8_t* p) {
  const __m128i codes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  switch (f) {
    case ScaleFormat::E5M2:
      return _mm256_cvtph_ps(_mm_slli_epi16(_mm_cvtepu8_epi16(codes), 8));
    case ScaleFormat::E4M3:
      return _mm256_cvtph_ps(_mm_slli_epi16(_mm_cvtepu8_epi16(codes), 7));
    case ScaleFormat::E8M0:
      break;
  }
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu8_epi32(codes), 23));
}

inline __m256 to_float(__m256i v) { return _mm256_cvtepi32_ps(v); }

// One block of one activation row against a group's weights, added to acc. Dot is the tier:
// Dot::Acc holds partial sums, Dot::add(acc, u, s) adds the products of unsigned bytes u and
// signed bytes s, Dot::sum(a, b) gives a + b as int32 lanes (one per weight row).
//
// Split block: (+) Spp*P(+,+) - Spn*P(+,-), (-) Snn*P(-,-) - Snp*P(-,+), activations the
// unsigned operand.
template <class Dot, class Weights>
inline __m256 split_sum(const Weights& wt, const uint8_t* xp, const uint8_t* xn, __m256 swp,
                        __m256 swn, float sxp, float sxn, __m256 acc) {
  typename Dot::Acc pp = Dot::zero(), pn = pp, np = pp, nn = pp;
  typename Dot::Acc pp_hi = pp, pn_hi = pp, np_hi = pp, nn_hi = pp;
  for (int l = 0; l < 4; ++l) {
    const WeightPlanes w = wt(l);
    const __m256i xp_lo = broadcast4(xp + 8 * l), xp_hi = broadcast4(xp + 8 * l + 4);
    const __m256i xn_lo = broadcast4(xn + 8 * l), xn_hi = broadcast4(xn + 8 * l + 4);
    pp = Dot::add(pp, xp_lo, w.pos_lo);
    pp_hi = Dot::add(pp_hi, xp_hi, w.pos_hi);
    pn = Dot::add(pn, xp_lo, w.neg_lo);
    pn_hi = Dot::add(pn_hi, xp_hi, w.neg_hi);
    np = Dot::add(np, xn_lo, w.pos_lo);
    np_hi = Dot::add(np_hi, xn_hi, w.pos_hi);
    nn = Dot::add(nn, xn_lo, w.neg_lo);
    nn_hi = Dot::add(nn_hi, xn_hi, w.neg_hi);
  }
  const __m256 from_pos = _mm256_fmsub_ps(to_float(Dot::sum(pp, pp_hi)), swp,
                                          _mm256_mul_ps(to_float(Dot::sum(pn, pn_hi)), swn));
  const __m256 from_neg = _mm256_fmsub_ps(to_float(Dot::sum(nn, nn_hi)), swn,
                                          _mm256_mul_ps(to_float(Dot::sum(np, np_hi)), swp));
  acc = _mm256_fmadd_ps(from_pos, _mm256_set1_ps(sxp), acc);
  return _mm256_fmadd_ps(from_neg, _mm256_set1_ps(sxn), acc);
}

// Folded block (one signed plane, one scale): weights the unsigned operand, two sums.
template <class Dot, class Weights>
inline __m256 folded_sum(const Weights& wt, const uint8_t* v, __m256 swp, __m256 swn,
                         float scale, __m256 acc) {
  typename Dot::Acc pos_lo = Dot::zero(), pos_hi = pos_lo, neg_lo = pos_lo, neg_hi = pos_lo;
  for (int l = 0; l < 4; ++l) {
    const WeightPlanes w = wt(l);
    const __m256i v_lo = broadcast4(v + 8 * l), v_hi = broadcast4(v + 8 * l + 4);
    pos_lo = Dot::add(pos_lo, w.pos_lo, v_lo);
    pos_hi = Dot::add(pos_hi, w.pos_hi, v_hi);
    neg_lo = Dot::add(neg_lo, w.neg_lo, v_lo);
    neg_hi = Dot::add(neg_hi, w.neg_hi, v_hi);
  }
  const __m256 sum = _mm256_fmsub_ps(to_float(Dot::sum(pos_lo, pos_hi)), swp,
                                     _mm256_mul_ps(to_float(Dot::sum(neg_lo, neg_hi)), swn));
  return _mm256_fmadd_ps(sum, _mm256_set1_ps(scale), acc);
}

template <class Dot, class Weights>
inline __m256 block_sum(const Weights& wt, const ActivationPlanes& x, size_t at, __m256 swp,
                        __m256 swn, __m256 acc) {
  // a block's kind is the same for every group: the branch predicts well
  if (x.folded.scale[at] != 0.0f)
    return folded_sum<Dot>(wt, reinterpret_cast<const uint8_t*>(&x.folded.values[at * 32]), swp,
                           swn, x.folded.scale[at], acc);
  return split_sum<Dot>(wt, &x.pos[at * 32], &x.neg[at * 32], swp, swn, x.scale_pos[at],
                        x.scale_neg[at], acc);
}

// y row r, the group's 8 columns (those below n), plus bias.
inline void store_row(const PackedLayout& w, __m256 acc, const float* bias, float* y,
                      int64_t grp, int64_t r) {
  const int64_t n0 = grp * kLanes;
  alignas(32) float out[kLanes];
  _mm256_store_ps(out, acc);
  const int64_t cols = w.n - n0 < kLanes ? w.n - n0 : kLanes;
  float* dst = y + r * w.n + n0;
  for (int64_t c = 0; c < cols; ++c) dst[c] = out[c] + (bias ? bias[n0 + c] : 0.0f);
}

// Software prefetch of the block `kPrefetchBlocks` ahead (see gemv_avx512.cpp; past the last
// group the address is outside the vector, which a prefetch may do).
constexpr int64_t kPrefetchBlocks = 16;
inline void prefetch(const void* base, int64_t offset) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(base) + uintptr_t(offset);
  _mm_prefetch(reinterpret_cast<const char*>(address), _MM_HINT_T0);
}
inline void prefetch_ahead(const PackedLayout& w, int64_t at) {
  prefetch(w.codes.data(), (at + kPrefetchBlocks) * kBlockBytes);
  prefetch(w.codes.data(), (at + kPrefetchBlocks) * kBlockBytes + 64);
  prefetch(w.scale_pos.data(), (at + kPrefetchBlocks) * kLanes);
  prefetch(w.scale_neg.data(), (at + kPrefetchBlocks) * kLanes);
}

// One activation row against one group: weights decoded in registers as they are used.
template <class Dot>
void group_one_row(const PackedLayout& w, const ActivationPlanes& x, const float* bias,
                   float* y, int64_t grp, int64_t r) {
  const int64_t nb = w.blocks;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t at_w = grp * nb + b;
    prefetch_ahead(w, at_w);
    const __m256 swp = load_scales(w.scale_format, w.scale_pos.data() + at_w * kLanes);
    const __m256 swn = load_scales(w.scale_format, w.scale_neg.data() + at_w * kLanes);
    acc = block_sum<Dot>(FromCodes{w.codes.data() + at_w * kBlockBytes}, x,
                         size_t(r * nb + b), swp, swn, acc);
  }
  store_row(w, acc, bias, y, grp, r);
}

// Rows [r0, r1) (at most kMaxRows) against one group: each weight block decoded once into L1,
// then every row's block, folded or split, reading it from there.
constexpr int64_t kMaxRows = 64;
template <class Dot>
void group_rows(const PackedLayout& w, const ActivationPlanes& x, const float* bias, float* y,
                int64_t grp, int64_t r0, int64_t r1) {
  const int64_t nb = w.blocks;
  __m256 acc[kMaxRows];
  for (int64_t r = r0; r < r1; ++r) acc[r - r0] = _mm256_setzero_ps();
  WeightPlanes planes[4];
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t at_w = grp * nb + b;
    prefetch_ahead(w, at_w);
    for (int l = 0; l < 4; ++l) planes[l] = decode_load(w.codes.data() + at_w * kBlockBytes + 32 * l);
    const __m256 swp = load_scales(w.scale_format, w.scale_pos.data() + at_w * kLanes);
    const __m256 swn = load_scales(w.scale_format, w.scale_neg.data() + at_w * kLanes);
    for (int64_t r = r0; r < r1; ++r)
      acc[r - r0] = block_sum<Dot>(FromBuffer{planes}, x, size_t(r * nb + b), swp, swn,
                                   acc[r - r0]);
  }
  for (int64_t r = r0; r < r1; ++r) store_row(w, acc[r - r0], bias, y, grp, r);
}

template <class Dot>
void packed_gemv(const PackedLayout& w, const ActivationPlanes& x, const float* bias, float* y,
                 int64_t group_begin, int64_t group_end, int64_t row_begin, int64_t row_end) {
  for (int64_t grp = group_begin; grp < group_end; ++grp) {
    if (row_end - row_begin == 1) {
      group_one_row<Dot>(w, x, bias, y, grp, row_begin);
      continue;
    }
    for (int64_t r0 = row_begin; r0 < row_end; r0 += kMaxRows)
      group_rows<Dot>(w, x, bias, y, grp, r0, r0 + kMaxRows < row_end ? r0 + kMaxRows : row_end);
  }
}

}  // namespace
}  // namespace amx::cpu
