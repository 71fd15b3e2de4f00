// The small-m W4A4 kernel on prepacked weights with AVX-512 VNNI (this file alone is compiled
// with -mavx512f -mavx512bw -mavx512vnni). One 512-bit lane per weight row: VPDPBUSD adds
// x[k..k+3] . w[row][k..k+3] for 16 rows at once, per (activation sign, weight sign) pair,
// so a block's four exact integer sums land in four int32 vectors, row by row, and are
// scaled with the rows' scale vectors: no horizontal sums, no per-row broadcasts.
#include <immintrin.h>

#include "internal.h"

namespace amx::cpu {

bool cpu_has_avx512_vnni() {
#if defined(__GNUC__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

namespace {

// 2*|E2M1| for codes of the plane's sign, 0 for the other sign, in each 128-bit lane
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

// 16 packed 16-bit scales as float32 (PackedLayout).
inline __m512 load_scales(const PackedLayout& w, const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if (w.bf16_scales) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

// Rows r0..r0+Rows of x against one group of 16 weight rows.
template <int Rows>
void group_rows(const PackedLayout& w, const ActivationPlanes& x, const float* bias, float* y,
                int64_t grp, int64_t r0) {
  const int64_t nb = w.blocks;
  const __m512i low = _mm512_set1_epi8(0x0F);
  const __m512i pos_table = _mm512_load_si512(kPosTable);
  const __m512i neg_table = _mm512_load_si512(kNegTable);
  __m512 acc[Rows];
  for (int r = 0; r < Rows; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
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
    // where the high nibbles' sums go: their own accumulators, or the low ones' (unused
    // arrays are optimized away)
    __m512i* pp2 = kSplit ? pp_hi : pp;
    __m512i* pn2 = kSplit ? pn_hi : pn;
    __m512i* np2 = kSplit ? np_hi : np;
    __m512i* nn2 = kSplit ? nn_hi : nn;
    const uint8_t* codes = w.codes.data() + (grp * nb + b) * 256;
    for (int l = 0; l < 4; ++l) {
      const __m512i v = _mm512_loadu_si512(codes + l * 64);
      const __m512i lo = _mm512_and_si512(v, low);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      const __m512i wp_lo = _mm512_shuffle_epi8(pos_table, lo);
      const __m512i wn_lo = _mm512_shuffle_epi8(neg_table, lo);
      const __m512i wp_hi = _mm512_shuffle_epi8(pos_table, hi);
      const __m512i wn_hi = _mm512_shuffle_epi8(neg_table, hi);
      for (int r = 0; r < Rows; ++r) {
        const uint8_t* xp = x.pos.data() + ((r0 + r) * nb + b) * 32 + 8 * l;
        const uint8_t* xn = x.neg.data() + ((r0 + r) * nb + b) * 32 + 8 * l;
        const __m512i xp_lo = broadcast4(xp), xp_hi = broadcast4(xp + 4);
        const __m512i xn_lo = broadcast4(xn), xn_hi = broadcast4(xn + 4);
        pp[r] = _mm512_dpbusd_epi32(pp[r], xp_lo, wp_lo);
        pp2[r] = _mm512_dpbusd_epi32(pp2[r], xp_hi, wp_hi);
        pn[r] = _mm512_dpbusd_epi32(pn[r], xp_lo, wn_lo);
        pn2[r] = _mm512_dpbusd_epi32(pn2[r], xp_hi, wn_hi);
        np[r] = _mm512_dpbusd_epi32(np[r], xn_lo, wp_lo);
        np2[r] = _mm512_dpbusd_epi32(np2[r], xn_hi, wp_hi);
        nn[r] = _mm512_dpbusd_epi32(nn[r], xn_lo, wn_lo);
        nn2[r] = _mm512_dpbusd_epi32(nn2[r], xn_hi, wn_hi);
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
  const int64_t n0 = grp * 16;
  const int64_t cols = w.n - n0 < 16 ? w.n - n0 : 16;
  const __mmask16 mask = __mmask16((1u << cols) - 1u);
  const __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + n0) : _mm512_setzero_ps();
  for (int r = 0; r < Rows; ++r)
    _mm512_mask_storeu_ps(y + (r0 + r) * w.n + n0, mask, _mm512_add_ps(acc[r], b));
}

}  // namespace

void packed_gemv_avx512(const PackedLayout& w, const ActivationPlanes& x, const float* bias,
                        float* y, int64_t group_begin, int64_t group_end) {
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
