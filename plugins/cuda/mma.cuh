// bfloat16 tensor-core MMA (mma.sync m16n8k16, sm_80+) and the weight decode that feeds it:
// packed E2M1 codes straight into bfloat16 pairs in registers, with no table in memory.
// tests/native/cuda_emulation/cuda_host.h provides the PTX wrappers on the host.
#pragma once

#include "device.cuh"

namespace amx::cuda {

#if !defined(AMX_CUDA_HOST_EMULATION)
// D += A (16 x 16, row-major) B (16 x 8, column-major); bfloat16 in, float32 accumulate.
// Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16"), lane = 4 g + t, each register
// a pair of bfloat16 (the lower column / row index in the low half):
//   a[0] = A[g][2t, 2t+1]  a[1] = A[g+8][2t, 2t+1]  a[2] = A[g][2t+8, 2t+9]  a[3] = A[g+8][..]
//   b0 = B[2t, 2t+1][g]    b1 = B[2t+8, 2t+9][g]
//   d[0], d[1] = D[g][2t, 2t+1]    d[2], d[3] = D[g+8][2t, 2t+1]
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// PTX prmt.b32 (default mode): byte i of the result is byte (s_i & 7) of {b:a}, or, when
// bit 3 of selector nibble s_i is set, that byte's top bit replicated (0x00 or 0xFF).
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t s) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(s));
  return r;
}

// Asynchronous global -> shared copies (sm_80 cp.async) of 16, 8 or 4 bytes; a copy with
// `valid` false writes zeros and reads nothing.
template <int BYTES>
__device__ __forceinline__ void cp_async(void* shared, const void* global, bool valid) {
  const unsigned dst = unsigned(__cvta_generic_to_shared(shared));
  const int src_bytes = valid ? BYTES : 0;
  if constexpr (BYTES == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global),
                 "r"(src_bytes));
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(global),
                 "n"(BYTES), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 bfloat16 matrices from shared memory: lane l gives the address of row l % 8 of
// matrix l / 8 (16 bytes); r[j] is matrix j's fragment (lane i: row i / 4, columns
// 2 (i % 4), 2 (i % 4) + 1), the layout of mma_bf16's operands.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  const unsigned address = unsigned(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// a * b on bfloat16 pairs, rounded once (fma with -0 keeps the sign of zero products).
__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(0x80008000u));
  return r;
}
#endif

// Two bfloat16 of the same value, as one register.
__device__ __forceinline__ uint32_t bf16_pair(float v) {
  const uint32_t h = __bfloat16_as_ushort(__float2bfloat16_rn(v));
  return h | (h << 16);
}

// |E2M1| as bfloat16 bytes, indexed by the 3 magnitude bits: 0, .5, 1, 1.5, 2, 3, 4, 6.
constexpr uint32_t kMagLow0 = 0xC0800000u, kMagLow1 = 0xC0804000u;   // low bytes, codes 0-3 / 4-7
constexpr uint32_t kMagHigh0 = 0x3F3F3F00u, kMagHigh1 = 0x40404040u;  // high bytes

// Elements 4h .. 4h+3 of a word of 8 codes (element e in bits 4e..4e+3) as two bfloat16 pairs
// [4h, 4h+1] and [4h+2, 4h+3], each value E2M1 x its block scale: `pos` (two copies of the
// positive scale, bfloat16) for codes 0-7, `neg` (the negated negative scale) for codes 8-15.
// Every product is exact: an E2M1 value (2 significant bits) times a scale (<= 4) fits in
// bfloat16's 8, so this is amx::dequantize_element without g.
template <int h>
__device__ __forceinline__ void decode_quad(uint32_t word, uint32_t pos, uint32_t neg,
                                            uint32_t& lo_pair, uint32_t& hi_pair) {
  const uint32_t select = (h == 0 ? word : word >> 16) & 0x7777u;  // magnitude indexes
  const uint32_t low = prmt(kMagLow0, kMagLow1, select), high = prmt(kMagHigh0, kMagHigh1, select);
  // sign masks: 0xFFFF in each half whose code has bit 3 set, by replicating bit 7 of the
  // byte that holds it (bit 3 of an even element's nibble is bit 7 of the word shifted by 4)
  const uint32_t shifted = word << 4;
  const uint32_t mask0 = prmt(shifted, word, h == 0 ? 0xCC88u : 0xEEAAu);
  const uint32_t mask1 = prmt(shifted, word, h == 0 ? 0xDD99u : 0xFFBBu);
  lo_pair = bf16x2_mul(prmt(low, high, 0x5140u), (neg & mask0) | (pos & ~mask0));
  hi_pair = bf16x2_mul(prmt(low, high, 0x7362u), (neg & mask1) | (pos & ~mask1));
}

// Where a row's scale byte of weight block `block` lives: the 4-byte aligned word (cp.async
// copies whole words; the word of an existing byte never leaves its buffer's aligned
// allocation) and the byte's place in it.
__device__ __forceinline__ int64_t scale_byte(const WeightArgs& w, int64_t row, int64_t block) {
  return (row * w.blocks + block) * w.format.scales_per_block;
}

}  // namespace amx::cuda
