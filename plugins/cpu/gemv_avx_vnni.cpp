// The packed W4A4 kernel with AVX-VNNI (this file alone is compiled with -mavx2 -mfma -mf16c
// -mavxvnni: Alder Lake and later, Zen 5): gemv_avx2_kernel.h with the VEX form of VPDPBUSD,
// which adds 4 byte products into each int32 lane in one instruction. Its int32 sums let the
// row tiles (M > 1) fold a weight block's two scales into one plane too (weight_fold.cpp):
// one VPDPBUSD per 32 products where AVX2 takes two, 4096x4096 M = 64 5.5 -> 4.6 ms.
#include "gemv_avx2_kernel.h"

namespace amx::cpu {

bool cpu_has_avx_vnni() {
#if defined(__GNUC__)
  return __builtin_cpu_supports("avxvnni") && __builtin_cpu_supports("avx2") &&
         __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

namespace {

struct VnniDot {
  using Acc = __m256i;  // int32 sums, one lane per weight row
  static constexpr int kChunk = 6;  // 2 x 6 accumulators + 2 weight planes + a broadcast
  // int32 sums: weight blocks folded to one signed plane where they can be
  // (PackedLayout::fold), operands v + 128; their chunks up to 8 rows (12 measured alike)
  static constexpr bool kFoldWeights = true;
  static constexpr int kFoldedChunk = 8;
  static Acc zero() { return _mm256_setzero_si256(); }
  static Acc add(Acc acc, __m256i u, __m256i s) { return _mm256_dpbusd_avx_epi32(acc, u, s); }
  static Acc first(__m256i u, __m256i s) { return add(zero(), u, s); }
  static void add_to(Acc& acc, __m256i u, __m256i s) {
    asm("%{vex%} vpdpbusd %[s], %[u], %[acc]" : [acc] "+x"(acc) : [u] "x"(u), [s] "x"(s));
  }
  static __m256i sum(Acc a, Acc b) { return _mm256_add_epi32(a, b); }
  static __m256i sum1(Acc a) { return a; }
};

}  // namespace

void packed_gemv_avx_vnni(const PackedLayout& w, const ActivationPlanes& x, const float* bias,
                          float* y, int64_t group_begin, int64_t group_end, int64_t row_begin,
                          int64_t row_end) {
  packed_gemv<VnniDot>(w, x, bias, y, group_begin, group_end, row_begin, row_end);
}

}  // namespace amx::cpu
