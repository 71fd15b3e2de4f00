// The packed W4A4 kernel with AVX2 (this file alone is compiled with -mavx2 -mfma -mf16c; the
// dispatcher calls it only where the CPU has them): gemv_avx2_kernel.h with VPMADDUBSW, whose
// int16 pair sums are added up over a whole block (at most 8 x 2 x 12 x 127 = 24384, so no
// int16 overflows) before one VPMADDWD per plane makes them int32. Also the AVX2 form of
// folding an activation block.
#include "fold.h"
#include "gemv_avx2_kernel.h"

namespace amx::cpu {

namespace {

struct Avx2Dot {
  using Acc = __m256i;  // int16 pair sums
  // 2 x 6 accumulators + 2 weight planes + a broadcast + a product: all 16 ymm, the last
  // four fixed (step), so that GCC neither spills nor moves the accumulators
  static constexpr int kChunk = 6;
  static constexpr int kFoldedChunk = 5;  // unused: int16 sums cannot take folded weights
  static constexpr bool kFoldWeights = false;
  static Acc zero() { return _mm256_setzero_si256(); }
  static Acc add(Acc acc, __m256i u, __m256i s) {
    return _mm256_add_epi16(acc, _mm256_maddubs_epi16(u, s));
  }
  static Acc first(__m256i u, __m256i s) { return _mm256_maddubs_epi16(u, s); }
  // add() in place, as two instructions: left to itself GCC reloads the row tiles' weight
  // planes for every product (or spills the products), about doubling the tile's count
  static void add_to(Acc& acc, __m256i u, __m256i s) {
    __m256i product;
    asm("vpmaddubsw %[s], %[u], %[p]\n\tvpaddw %[p], %[acc], %[acc]"
        : [acc] "+x"(acc), [p] "=&x"(product)
        : [u] "x"(u), [s] "x"(s));
  }
  // One h-step of a row tile's row: the operand's 4 bytes x at broadcast, times both weight
  // planes, added to p and n (First: p and n are the products). The scratch registers and
  // the planes are fixed ones (ymm12 to ymm15, see chunk_rows): left to choose, GCC rotated
  // the accumulators through registers, a move per row and step.
  template <bool First>
  static void step(Acc& p, Acc& n, __m256i wp, __m256i wn, const uint8_t* x) {
    register __m256i b asm("ymm14"), t asm("ymm15");
    const int32_t& v = *reinterpret_cast<const int32_t*>(x);
    if constexpr (First)
      asm("vpbroadcastd %[x], %[b]\n\tvpmaddubsw %[b], %[wp], %[p]\n\t"
          "vpmaddubsw %[b], %[wn], %[n]"
          : [p] "=x"(p), [n] "=x"(n), [b] "=&x"(b)
          : [wp] "x"(wp), [wn] "x"(wn), [x] "m"(v));
    else
      asm("vpbroadcastd %[x], %[b]\n\tvpmaddubsw %[b], %[wp], %[t]\n\t"
          "vpaddw %[t], %[p], %[p]\n\tvpmaddubsw %[b], %[wn], %[t]\n\tvpaddw %[t], %[n], %[n]"
          : [p] "+x"(p), [n] "+x"(n), [b] "=&x"(b), [t] "=&x"(t)
          : [wp] "x"(wp), [wn] "x"(wn), [x] "m"(v));
  }
  static __m256i sum(Acc a, Acc b) { return sum1(_mm256_add_epi16(a, b)); }
  static __m256i sum1(Acc a) { return _mm256_madd_epi16(a, _mm256_set1_epi16(1)); }
};

// gemv_avx512.cpp's fold_block in 256-bit vectors: 32 int16 products in two registers.
bool fold_block(const uint8_t* pos, const uint8_t* neg, float scale_pos, float scale_neg,
                int8_t* out, float* scale) {
  const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pos));
  const __m256i n = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(neg));
  FoldFactors f;
  if (!fold_factors(!_mm256_testz_si256(p, p), !_mm256_testz_si256(n, n), scale_pos, scale_neg,
                    &f))
    return false;
  const __m256i fp = _mm256_set1_epi16(f.pos), fn = _mm256_set1_epi16(f.neg);
  auto values = [&](__m128i pp, __m128i nn) {
    return _mm256_sub_epi16(_mm256_mullo_epi16(_mm256_cvtepu8_epi16(pp), fp),
                            _mm256_mullo_epi16(_mm256_cvtepu8_epi16(nn), fn));
  };
  const __m256i lo = values(_mm256_castsi256_si128(p), _mm256_castsi256_si128(n));
  const __m256i hi = values(_mm256_extracti128_si256(p, 1), _mm256_extracti128_si256(n, 1));
  const __m256i limit = _mm256_set1_epi16(127);
  const __m256i over = _mm256_or_si256(_mm256_cmpgt_epi16(_mm256_abs_epi16(lo), limit),
                                       _mm256_cmpgt_epi16(_mm256_abs_epi16(hi), limit));
  if (!_mm256_testz_si256(over, over)) return false;
  // packs works per 128-bit lane: [lo0 hi0 | lo1 hi1] back to k order
  const __m256i bytes = _mm256_permute4x64_epi64(_mm256_packs_epi16(lo, hi), 0xD8);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), bytes);
  *scale = f.scale;
  return true;
}

}  // namespace

void fold_activation_block_avx2(ActivationPlanes* x, int64_t at) {
  ActivationPlanes::Folded& f = x->folded;
  if (!fold_block(x->pos.data() + at * 32, x->neg.data() + at * 32, x->scale_pos[size_t(at)],
                  x->scale_neg[size_t(at)], f.values.data() + at * 32, &f.scale[size_t(at)]))
    f.scale[size_t(at)] = 0.0f;
}

void packed_gemv_avx2(const PackedLayout& w, const ActivationPlanes& x, const float* bias,
                      float* y, int64_t group_begin, int64_t group_end, int64_t row_begin,
                      int64_t row_end) {
  packed_gemv<Avx2Dot>(w, x, bias, y, group_begin, group_end, row_begin, row_end);
}

}  // namespace amx::cpu
