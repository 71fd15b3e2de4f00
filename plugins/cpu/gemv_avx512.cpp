// The small-m W4A4 kernel on prepacked weights with AVX-512 VNNI and VBMI (this file alone is
// compiled with -mavx512f -mavx512bw -mavx512vnni -mavx512vbmi: Ice Lake, Sapphire Rapids,
// Zen 4 and later). One 512-bit lane per weight row: VPDPBUSD adds x[k..k+3] . w[row][k..k+3]
// for 16 rows at once, per (activation sign, weight sign) pair, so a block's four exact
// integer sums land in four int32 vectors, row by row, and are scaled with the rows' scale
// vectors: no horizontal sums, no per-row broadcasts. Most activation blocks fold their two
// scales into one (ActivationPlanes::Folded), which halves their VPDPBUSDs.
#include <immintrin.h>

#include "fold.h"
#include "internal.h"

namespace amx::cpu {

bool cpu_has_avx512_vnni() {
#if defined(__GNUC__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
#else
  return false;
#endif
}

namespace {

// 2*|E2M1| for codes of the plane's sign, 0 for the other sign, repeated every 16 bytes
#define AMX_POS_LANE 0, 1, 2, 3, 4, 6, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0
#define AMX_NEG_LANE 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 6, 8, 12
alignas(64) const uint8_t kPosTable[64] = {AMX_POS_LANE, AMX_POS_LANE, AMX_POS_LANE, AMX_POS_LANE};
alignas(64) const uint8_t kNegTable[64] = {AMX_NEG_LANE, AMX_NEG_LANE, AMX_NEG_LANE, AMX_NEG_LANE};
#undef AMX_POS_LANE
#undef AMX_NEG_LANE

inline __m512i broadcast4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm512_set1_epi32(v);
}

// 16 scale codes as float32, the scales times 1 / (4 unit) (PackedLayout).
inline __m512 load_scales(const PackedLayout& w, const uint8_t* p) {
  const __m128i codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  switch (w.scale_format) {
    case ScaleFormat::E5M2:
      return _mm512_cvtph_ps(_mm256_slli_epi16(_mm256_cvtepu8_epi16(codes), 8));
    case ScaleFormat::E4M3:
      return _mm512_cvtph_ps(_mm256_slli_epi16(_mm256_cvtepu8_epi16(codes), 7));
    case ScaleFormat::E8M0:
      break;
  }
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu8_epi32(codes), 23));
}

// The E2M1 codes of one 64-byte load as VPDPBUSD operands: 2|E2M1| (0..12, so either operand)
// of the positive codes (0 for negative ones) and of the negative codes, low and high nibbles.
// VPERMB looks up 6 index bits, and the tables repeat every 16 bytes, so neither nibble needs
// a mask (the shifted high nibbles carry the next byte's low bits above bit 3).
struct WeightPlanes {
  __m512i pos_lo, neg_lo, pos_hi, neg_hi;
};

inline WeightPlanes weight_planes(const uint8_t* codes) {
  const __m512i pos_table = _mm512_load_si512(kPosTable);
  const __m512i neg_table = _mm512_load_si512(kNegTable);
  const __m512i v = _mm512_loadu_si512(codes);
  const __m512i hi = _mm512_srli_epi16(v, 4);
  return {_mm512_permutexvar_epi8(v, pos_table), _mm512_permutexvar_epi8(v, neg_table),
          _mm512_permutexvar_epi8(hi, pos_table), _mm512_permutexvar_epi8(hi, neg_table)};
}

// One block of one activation row against a group's decoded weights (wt, the four loads;
// swp and swn, the 16 rows' scales), added to acc.
//
// A split block (two planes, each with its scale): four integer sums per weight row,
//   (+) Spp*P(+,+) - Spn*P(+,-),  (-) Snn*P(-,-) - Snp*P(-,+).
// The high nibbles' sums have accumulators of their own: the chains of dependent VPDPBUSDs
// would otherwise bound the speed.
inline __m512 split_sum(const WeightPlanes (&wt)[4], const uint8_t* xp, const uint8_t* xn,
                        __m512 swp, __m512 swn, float sxp, float sxn, __m512 acc) {
  __m512i pp = _mm512_setzero_si512(), pn = pp, np = pp, nn = pp;
  __m512i pp_hi = pp, pn_hi = pp, np_hi = pp, nn_hi = pp;
  for (int l = 0; l < 4; ++l) {
    const __m512i xp_lo = broadcast4(xp + 8 * l), xp_hi = broadcast4(xp + 8 * l + 4);
    const __m512i xn_lo = broadcast4(xn + 8 * l), xn_hi = broadcast4(xn + 8 * l + 4);
    pp = _mm512_dpbusd_epi32(pp, xp_lo, wt[l].pos_lo);
    pp_hi = _mm512_dpbusd_epi32(pp_hi, xp_hi, wt[l].pos_hi);
    pn = _mm512_dpbusd_epi32(pn, xp_lo, wt[l].neg_lo);
    pn_hi = _mm512_dpbusd_epi32(pn_hi, xp_hi, wt[l].neg_hi);
    np = _mm512_dpbusd_epi32(np, xn_lo, wt[l].pos_lo);
    np_hi = _mm512_dpbusd_epi32(np_hi, xn_hi, wt[l].pos_hi);
    nn = _mm512_dpbusd_epi32(nn, xn_lo, wt[l].neg_lo);
    nn_hi = _mm512_dpbusd_epi32(nn_hi, xn_hi, wt[l].neg_hi);
  }
  const __m512 from_pos =
      _mm512_fmsub_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(pp, pp_hi)), swp,
                      _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(pn, pn_hi)), swn));
  const __m512 from_neg =
      _mm512_fmsub_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(nn, nn_hi)), swn,
                      _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(np, np_hi)), swp));
  acc = _mm512_fmadd_ps(from_pos, _mm512_set1_ps(sxp), acc);
  return _mm512_fmadd_ps(from_neg, _mm512_set1_ps(sxn), acc);
}

// A folded block (one signed plane, one scale): two sums per weight row, half the VPDPBUSDs.
// Here the weights are the unsigned operand and the activations the signed one.
inline __m512 folded_sum(const WeightPlanes (&wt)[4], const uint8_t* v, __m512 swp, __m512 swn,
                         float scale, __m512 acc) {
  __m512i pos_lo = _mm512_setzero_si512(), pos_hi = pos_lo, neg_lo = pos_lo, neg_hi = pos_lo;
  for (int l = 0; l < 4; ++l) {
    const __m512i v_lo = broadcast4(v + 8 * l), v_hi = broadcast4(v + 8 * l + 4);
    pos_lo = _mm512_dpbusd_epi32(pos_lo, wt[l].pos_lo, v_lo);
    pos_hi = _mm512_dpbusd_epi32(pos_hi, wt[l].pos_hi, v_hi);
    neg_lo = _mm512_dpbusd_epi32(neg_lo, wt[l].neg_lo, v_lo);
    neg_hi = _mm512_dpbusd_epi32(neg_hi, wt[l].neg_hi, v_hi);
  }
  const __m512 sum = _mm512_fmsub_ps(
      _mm512_cvtepi32_ps(_mm512_add_epi32(pos_lo, pos_hi)), swp,
      _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(neg_lo, neg_hi)), swn));
  return _mm512_fmadd_ps(sum, _mm512_set1_ps(scale), acc);
}

// y rows r0..r0+Rows, the group's 16 columns (those below n), plus bias.
template <int Rows>
inline void store_rows(const PackedLayout& w, const __m512* acc, const float* bias, float* y,
                       int64_t grp, int64_t r0) {
  const int64_t n0 = grp * 16;
  const int64_t cols = w.n - n0 < 16 ? w.n - n0 : 16;
  const __mmask16 mask = __mmask16((1u << cols) - 1u);
  const __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + n0) : _mm512_setzero_ps();
  for (int r = 0; r < Rows; ++r)
    _mm512_mask_storeu_ps(y + (r0 + r) * w.n + n0, mask, _mm512_add_ps(acc[r], b));
}

// Asks for the bytes of the block `kPrefetchBlocks` ahead (in the next group past the
// group's end, which the same thread takes next): the hardware prefetcher alone left the
// loads of a decode step waiting (M = 1, 4096x4096: 200 -> 186 us; 8 to 48 blocks ahead
// measured alike).
constexpr int64_t kPrefetchBlocks = 16;
inline void prefetch(const void* base, int64_t offset) {
  // address arithmetic, not pointer arithmetic: past the last group it points outside the
  // vector, which a prefetch may do
  const uintptr_t address = reinterpret_cast<uintptr_t>(base) + uintptr_t(offset);
  _mm_prefetch(reinterpret_cast<const char*>(address), _MM_HINT_T0);
}
inline void prefetch_ahead(const PackedLayout& w, int64_t at) {
  for (int line = 0; line < 4; ++line)
    prefetch(w.codes.data(), (at + kPrefetchBlocks) * 256 + 64 * line);
  prefetch(w.scale_pos.data(), (at + kPrefetchBlocks) * 16);
  prefetch(w.scale_neg.data(), (at + kPrefetchBlocks) * 16);
}

// Rows r0..r0+Rows of x against one group of 16 weight rows: each block's weights decoded
// once, then each row's block, folded or split.
template <int Rows>
void group_rows(const PackedLayout& w, const ActivationPlanes& x, const float* bias, float* y,
                int64_t grp, int64_t r0) {
  const int64_t nb = w.blocks;
  __m512 acc[Rows];
  for (int r = 0; r < Rows; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t at_w = grp * nb + b;
    prefetch_ahead(w, at_w);
    WeightPlanes wt[4];
    for (int l = 0; l < 4; ++l) wt[l] = weight_planes(w.codes.data() + at_w * 256 + l * 64);
    const __m512 swp = load_scales(w, w.scale_pos.data() + at_w * 16);
    const __m512 swn = load_scales(w, w.scale_neg.data() + at_w * 16);
    for (int r = 0; r < Rows; ++r) {
      const size_t at = size_t((r0 + r) * nb + b);
      // a block's kind is the same for every group: the branch predicts well
      if (x.folded.scale[at] != 0.0f)
        acc[r] = folded_sum(wt, reinterpret_cast<const uint8_t*>(&x.folded.values[at * 32]),
                            swp, swn, x.folded.scale[at], acc[r]);
      else
        acc[r] = split_sum(wt, &x.pos[at * 32], &x.neg[at * 32], swp, swn, x.scale_pos[at],
                           x.scale_neg[at], acc[r]);
    }
  }
  store_rows<Rows>(w, acc, bias, y, grp, r0);
}

// One block's folded plane and scale (see ActivationPlanes::Folded), or false, nothing
// written, where a value would not fit an int8 or a scale is NaN.
bool fold_block(const uint8_t* pos, const uint8_t* neg, float scale_pos, float scale_neg,
                int8_t* out, float* scale) {
  const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pos));
  const __m256i n = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(neg));
  FoldFactors f;
  if (!fold_factors(!_mm256_testz_si256(p, p), !_mm256_testz_si256(n, n), scale_pos, scale_neg,
                    &f))
    return false;
  const __m512i v = _mm512_sub_epi16(
      _mm512_mullo_epi16(_mm512_cvtepu8_epi16(p), _mm512_set1_epi16(f.pos)),
      _mm512_mullo_epi16(_mm512_cvtepu8_epi16(n), _mm512_set1_epi16(f.neg)));
  if (_mm512_cmpgt_epi16_mask(_mm512_abs_epi16(v), _mm512_set1_epi16(127)) != 0) return false;
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi16_epi8(v));
  *scale = f.scale;
  return true;
}

}  // namespace

void fold_activation_block_avx512(ActivationPlanes* x, int64_t at) {
  ActivationPlanes::Folded& f = x->folded;
  if (!fold_block(x->pos.data() + at * 32, x->neg.data() + at * 32, x->scale_pos[size_t(at)],
                  x->scale_neg[size_t(at)], f.values.data() + at * 32, &f.scale[size_t(at)]))
    f.scale[size_t(at)] = 0.0f;
}

void packed_gemv_avx512(const PackedLayout& w, const ActivationPlanes& x, const float* bias,
                        float* y, int64_t group_begin, int64_t group_end, int64_t row_begin,
                        int64_t row_end) {
  for (int64_t grp = group_begin; grp < group_end; ++grp) {
    int64_t r0 = row_begin;
    for (; r0 + 16 <= row_end; r0 += 16) group_rows<16>(w, x, bias, y, grp, r0);
    for (; r0 + 8 <= row_end; r0 += 8) group_rows<8>(w, x, bias, y, grp, r0);
    switch (row_end - r0) {
      case 7: group_rows<7>(w, x, bias, y, grp, r0); break;
      case 6: group_rows<6>(w, x, bias, y, grp, r0); break;
      case 5: group_rows<5>(w, x, bias, y, grp, r0); break;
      case 4: group_rows<4>(w, x, bias, y, grp, r0); break;
      case 3: group_rows<3>(w, x, bias, y, grp, r0); break;
      case 2: group_rows<2>(w, x, bias, y, grp, r0); break;
      case 1: group_rows<1>(w, x, bias, y, grp, r0); break;
      default: break;
    }
  }
}

}  // namespace amx::cpu
