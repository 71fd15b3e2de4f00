// The small-m W4A4 kernel on prepacked weights with AVX-512 VNNI and VBMI (this file alone is
// compiled with -mavx512f -mavx512bw -mavx512vnni -mavx512vbmi: Ice Lake, Sapphire Rapids,
// Zen 4 and later). One 512-bit lane per weight row: VPDPBUSD adds x[k..k+3] . w[row][k..k+3]
// for 16 rows at once, per (activation sign, weight sign) pair, so a block's four exact
// integer sums land in four int32 vectors, row by row, and are scaled with the rows' scale
// vectors: no horizontal sums, no per-row broadcasts. At M = 1 most blocks fold their two
// activation scales into one (ActivationPlanes::Folded), which halves the VPDPBUSDs.
#include <immintrin.h>

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

// Block b of rows r0..r0+Rows of x (positive and negative planes, each with its scale) against
// one group of 16 weight rows, added to acc.
template <int Rows>
inline void split_block(const PackedLayout& w, const ActivationPlanes& x, int64_t grp, int64_t b,
                        int64_t r0, __m512* acc) {
  const int64_t nb = w.blocks;
  // With one or two rows the high nibbles' sums go into accumulators of their own: the four
  // sums' chains of dependent VPDPBUSDs would otherwise bound the speed (M = 1: 0.327 ->
  // 0.300 ms at 4096x4096). With more rows there are chains enough, and twice the
  // accumulators would not fit in the 32 registers (M = 16: 10% slower).
  constexpr bool kSplit = Rows <= 2;
  __m512i pp[Rows], pn[Rows], np[Rows], nn[Rows], pp_hi[Rows], pn_hi[Rows], np_hi[Rows],
      nn_hi[Rows];
  for (int r = 0; r < Rows; ++r)
    pp[r] = pn[r] = np[r] = nn[r] = pp_hi[r] = pn_hi[r] = np_hi[r] = nn_hi[r] =
        _mm512_setzero_si512();
  // where the high nibbles' sums go: their own accumulators, or the low ones' (unused arrays
  // are optimized away)
  __m512i* pp2 = kSplit ? pp_hi : pp;
  __m512i* pn2 = kSplit ? pn_hi : pn;
  __m512i* np2 = kSplit ? np_hi : np;
  __m512i* nn2 = kSplit ? nn_hi : nn;
  const uint8_t* codes = w.codes.data() + (grp * nb + b) * 256;
  for (int l = 0; l < 4; ++l) {
    const WeightPlanes wt = weight_planes(codes + l * 64);
    for (int r = 0; r < Rows; ++r) {
      const uint8_t* xp = x.pos.data() + ((r0 + r) * nb + b) * 32 + 8 * l;
      const uint8_t* xn = x.neg.data() + ((r0 + r) * nb + b) * 32 + 8 * l;
      const __m512i xp_lo = broadcast4(xp), xp_hi = broadcast4(xp + 4);
      const __m512i xn_lo = broadcast4(xn), xn_hi = broadcast4(xn + 4);
      pp[r] = _mm512_dpbusd_epi32(pp[r], xp_lo, wt.pos_lo);
      pp2[r] = _mm512_dpbusd_epi32(pp2[r], xp_hi, wt.pos_hi);
      pn[r] = _mm512_dpbusd_epi32(pn[r], xp_lo, wt.neg_lo);
      pn2[r] = _mm512_dpbusd_epi32(pn2[r], xp_hi, wt.neg_hi);
      np[r] = _mm512_dpbusd_epi32(np[r], xn_lo, wt.pos_lo);
      np2[r] = _mm512_dpbusd_epi32(np2[r], xn_hi, wt.pos_hi);
      nn[r] = _mm512_dpbusd_epi32(nn[r], xn_lo, wt.neg_lo);
      nn2[r] = _mm512_dpbusd_epi32(nn2[r], xn_hi, wt.neg_hi);
    }
  }
  if (kSplit) {
    for (int r = 0; r < Rows; ++r) {
      pp[r] = _mm512_add_epi32(pp[r], pp_hi[r]);
      pn[r] = _mm512_add_epi32(pn[r], pn_hi[r]);
      np[r] = _mm512_add_epi32(np[r], np_hi[r]);
      nn[r] = _mm512_add_epi32(nn[r], nn_hi[r]);
    }
  }
  const __m512 swp = load_scales(w, w.scale_pos.data() + (grp * nb + b) * 16);
  const __m512 swn = load_scales(w, w.scale_neg.data() + (grp * nb + b) * 16);
  for (int r = 0; r < Rows; ++r) {
    const int64_t at = (r0 + r) * nb + b;
    // by activation sign: (+) Spp*P(+,+) - Spn*P(+,-), (-) Snn*P(-,-) - Snp*P(-,+)
    const __m512 from_pos = _mm512_fmsub_ps(_mm512_cvtepi32_ps(pp[r]), swp,
                                            _mm512_mul_ps(_mm512_cvtepi32_ps(pn[r]), swn));
    const __m512 from_neg = _mm512_fmsub_ps(_mm512_cvtepi32_ps(nn[r]), swn,
                                            _mm512_mul_ps(_mm512_cvtepi32_ps(np[r]), swp));
    acc[r] = _mm512_fmadd_ps(from_pos, _mm512_set1_ps(x.scale_pos[size_t(at)]), acc[r]);
    acc[r] = _mm512_fmadd_ps(from_neg, _mm512_set1_ps(x.scale_neg[size_t(at)]), acc[r]);
  }
}

// Block b of x's folded row (one signed plane, one scale) against one group of weight rows:
// two VPDPBUSDs per 4 elements where split_block<1> needs four.
inline __m512 folded_block(const PackedLayout& w, const ActivationPlanes::Folded& f,
                           int64_t grp, int64_t b, __m512 acc) {
  const int64_t nb = w.blocks;
  __m512i pos_lo = _mm512_setzero_si512(), pos_hi = pos_lo, neg_lo = pos_lo, neg_hi = pos_lo;
  const uint8_t* codes = w.codes.data() + (grp * nb + b) * 256;
  const uint8_t* v = reinterpret_cast<const uint8_t*>(f.values.data()) + b * 32;
  for (int l = 0; l < 4; ++l) {
    const WeightPlanes wt = weight_planes(codes + l * 64);
    const __m512i v_lo = broadcast4(v + 8 * l), v_hi = broadcast4(v + 8 * l + 4);
    // here the weights are the unsigned operand and the activations the signed one
    pos_lo = _mm512_dpbusd_epi32(pos_lo, wt.pos_lo, v_lo);
    pos_hi = _mm512_dpbusd_epi32(pos_hi, wt.pos_hi, v_hi);
    neg_lo = _mm512_dpbusd_epi32(neg_lo, wt.neg_lo, v_lo);
    neg_hi = _mm512_dpbusd_epi32(neg_hi, wt.neg_hi, v_hi);
  }
  const __m512 swp = load_scales(w, w.scale_pos.data() + (grp * nb + b) * 16);
  const __m512 swn = load_scales(w, w.scale_neg.data() + (grp * nb + b) * 16);
  const __m512 sum = _mm512_fmsub_ps(
      _mm512_cvtepi32_ps(_mm512_add_epi32(pos_lo, pos_hi)), swp,
      _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(neg_lo, neg_hi)), swn));
  return _mm512_fmadd_ps(sum, _mm512_set1_ps(f.scale[size_t(b)]), acc);
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

// Rows r0..r0+Rows of x against one group of 16 weight rows.
template <int Rows>
void group_rows(const PackedLayout& w, const ActivationPlanes& x, const float* bias, float* y,
                int64_t grp, int64_t r0) {
  __m512 acc[Rows];
  for (int r = 0; r < Rows; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < w.blocks; ++b) split_block<Rows>(w, x, grp, b, r0, acc);
  store_rows<Rows>(w, acc, bias, y, grp, r0);
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

// x's one row, each block folded or split, against one group of 16 weight rows.
void group_folded_row(const PackedLayout& w, const ActivationPlanes& x, const float* bias,
                      float* y, int64_t grp) {
  __m512 acc[1] = {_mm512_setzero_ps()};
  for (int64_t b = 0; b < w.blocks; ++b) {
    prefetch_ahead(w, grp * w.blocks + b);
    // the blocks' kinds are the same for every group: the branch predicts well
    if (x.folded.scale[size_t(b)] != 0.0f)
      acc[0] = folded_block(w, x.folded, grp, b, acc[0]);
    else
      split_block<1>(w, x, grp, b, 0, acc);
  }
  store_rows<1>(w, acc, bias, y, grp, 0);
}

// s = m * 2^e with m odd, for a finite s > 0 (float32 subnormals included).
inline void odd_mantissa(float s, int32_t* m, int* e) {
  const uint32_t bits = float_bits(s);
  const int field = int((bits >> 23) & 0xFF);
  uint32_t mantissa = bits & 0x7FFFFFu;
  int exponent = -149;
  if (field != 0) {
    mantissa |= 0x800000u;
    exponent = field - 150;
  }
  const int zeros = __builtin_ctz(mantissa);
  *m = int32_t(mantissa >> zeros);
  *e = exponent + zeros;
}

// One block's folded plane and scale (see ActivationPlanes::Folded), or false, nothing
// written, where a value would not fit an int8 or a scale is NaN.
bool fold_block(const uint8_t* pos, const uint8_t* neg, float scale_pos, float scale_neg,
                int8_t* out, float* scale) {
  if (!is_finite(scale_pos) || !is_finite(scale_neg)) return false;
  const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pos));
  const __m256i n = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(neg));
  // a side with no element keeps a placeholder scale, which must not set Emin
  const bool has_pos = !_mm256_testz_si256(p, p), has_neg = !_mm256_testz_si256(n, n);
  int32_t mp = 0, mn = 0;
  int ep = 0, en = 0;
  if (has_pos) odd_mantissa(scale_pos, &mp, &ep);
  if (has_neg) odd_mantissa(scale_neg, &mn, &en);
  const int emin = has_pos && has_neg ? (ep < en ? ep : en) : has_pos ? ep : en;
  // M * 2^(E - Emin), capped at 128: past 127 every nonzero element fails the check below
  auto factor = [emin](bool has, int32_t m, int e) -> int16_t {
    if (!has) return 0;
    if (e - emin >= 7 || (m << (e - emin)) > 128) return 128;
    return int16_t(m << (e - emin));
  };
  const __m512i v = _mm512_sub_epi16(
      _mm512_mullo_epi16(_mm512_cvtepu8_epi16(p), _mm512_set1_epi16(factor(has_pos, mp, ep))),
      _mm512_mullo_epi16(_mm512_cvtepu8_epi16(n), _mm512_set1_epi16(factor(has_neg, mn, en))));
  if (_mm512_cmpgt_epi16_mask(_mm512_abs_epi16(v), _mm512_set1_epi16(127)) != 0) return false;
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi16_epi8(v));
  *scale = exp2i(emin);
  return true;
}

}  // namespace

void size_folded(ActivationPlanes* x) {
  x->folded.values.assign(size_t(x->blocks * 32), 0);
  x->folded.scale.assign(size_t(x->blocks), 0.0f);
}

void fold_activation_block(ActivationPlanes* x, int64_t b) {
  ActivationPlanes::Folded& f = x->folded;
  if (!fold_block(x->pos.data() + b * 32, x->neg.data() + b * 32, x->scale_pos[size_t(b)],
                  x->scale_neg[size_t(b)], f.values.data() + b * 32, &f.scale[size_t(b)]))
    f.scale[size_t(b)] = 0.0f;
}

void packed_gemv_avx512(const PackedLayout& w, const ActivationPlanes& x, const float* bias,
                        float* y, int64_t group_begin, int64_t group_end) {
  if (x.rows == 1 && x.folded.scale.size() == size_t(x.blocks)) {
    for (int64_t grp = group_begin; grp < group_end; ++grp) group_folded_row(w, x, bias, y, grp);
    return;
  }
  for (int64_t grp = group_begin; grp < group_end; ++grp) {
    int64_t r0 = 0;
    for (; r0 + 4 <= x.rows; r0 += 4) group_rows<4>(w, x, bias, y, grp, r0);
    switch (x.rows - r0) {
      case 3: group_rows<3>(w, x, bias, y, grp, r0); break;
      case 2: group_rows<2>(w, x, bias, y, grp, r0); break;
      case 1: group_rows<1>(w, x, bias, y, grp, r0); break;
      default: break;
    }
  }
}

}  // namespace amx::cpu
