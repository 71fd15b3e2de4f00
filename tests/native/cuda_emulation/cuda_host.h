// Just enough of CUDA to run the kernels of plugins/cuda/*.cuh and the C ABI of api.cu on the
// host, one std::thread per CUDA thread, so that machines without a GPU test the kernels'
// indexing and numerics (not their speed). mma.sync is emulated with float32 sums.
// Included first (g++ -include) in place of the CUDA headers; "device memory" is host memory.
#pragma once

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define AMX_CUDA_HOST_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one block runs at a time, so a static is the block's memory
#define __align__(n) __attribute__((aligned(n)))

using std::isnan;

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3() = default;
  dim3(unsigned a, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint4 {
  uint32_t x, y, z, w;
};
struct uint2 {
  uint32_t x, y;
};
struct float4 {
  float x, y, z, w;
};
inline uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return {a, b, c, d}; }
inline uint2 make_uint2(uint32_t a, uint32_t b) { return {a, b}; }

// ---- runtime API: what api.cu calls ---------------------------------------------------------
enum cudaError_t { cudaSuccess = 0, cudaErrorNotSupported = 801 };
using cudaStream_t = struct CUstream_st*;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* count) { return *count = 1, cudaSuccess; }
inline const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaSuccess ? "cudaSuccess" : "cudaErrorNotSupported";
}
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : "not supported by the host emulation";
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}

// ---- 16-bit floats, round to nearest even like the CUDA intrinsics --------------------------
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __half2float(__half h) {
  _Float16 v;
  std::memcpy(&v, &h.bits, 2);
  return float(v);
}
inline __half __float2half_rn(float f) {
  const _Float16 v = _Float16(f);  // GCC's conversion rounds to nearest even
  __half h;
  std::memcpy(&h.bits, &v, 2);
  return h;
}
inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t bits = uint32_t(b.bits) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (std::isnan(f)) return {uint16_t((bits >> 16) | 0x0040u)};
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return {uint16_t(bits >> 16)};
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.bits; }

// single-rounding float arithmetic (the host build never contracts a * b + c: no -mfma)
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }

// ---- threads, blocks and warps ---------------------------------------------------------------
namespace emu {

// A reusable barrier for `count` threads.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const long generation = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation != generation_; });
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int count_, arrived_ = 0;
  long generation_ = 0;
};

struct Block {
  explicit Block(int threads) : all(threads) {
    for (int w = 0; w < (threads + 31) / 32; ++w) warps.emplace_back(new Barrier(32));
    lanes.resize(size_t(threads));
    mma.resize(size_t(threads));
  }
  Barrier all;
  std::vector<std::unique_ptr<Barrier>> warps;
  std::vector<float> lanes;  // __shfl_xor_sync's exchange
  struct MmaLane {
    uint32_t a[4], b[2];
    const void* row;  // ldmatrix_x4's address
  };
  std::vector<MmaLane> mma;  // mma_bf16's and ldmatrix_x4's exchange
};

inline thread_local Block* block = nullptr;
inline std::mutex atomic_mutex;

}  // namespace emu

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

inline void __syncthreads() { emu::block->all.wait(); }

inline float __shfl_xor_sync(unsigned, float v, int offset) {
  const unsigned t = threadIdx.x, base = t & ~31u;
  emu::Barrier& warp = *emu::block->warps[t / 32];
  emu::block->lanes[t] = v;
  warp.wait();
  const float other = emu::block->lanes[base + ((t - base) ^ unsigned(offset))];
  warp.wait();
  return other;
}

inline unsigned atomicMax(unsigned* p, unsigned v) {
  std::lock_guard<std::mutex> lock(emu::atomic_mutex);
  const unsigned old = *p;
  if (v > old) *p = v;
  return old;
}

inline void __syncwarp(unsigned = 0xFFFFFFFFu) { emu::block->warps[threadIdx.x / 32]->wait(); }

// ---- mma.sync m16n8k16 and the PTX instructions of plugins/cuda/mma.cuh ----------------------
namespace amx::cuda {

inline float bf16_half(uint32_t pair, int high) {
  return __bfloat162float(__nv_bfloat16{uint16_t(high ? pair >> 16 : pair & 0xFFFF)});
}

// The fragment layout of mma.cuh's comment: every lane publishes its registers, then computes
// its own four outputs from the whole warp's.
inline void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const unsigned t = threadIdx.x, base = t & ~31u;
  emu::Barrier& warp = *emu::block->warps[t / 32];
  emu::block->mma[t] = {{a[0], a[1], a[2], a[3]}, {b0, b1}, nullptr};
  warp.wait();
  auto A = [&](int r, int k) {  // lane 4 (r % 8) + (k % 8) / 2, register by (r / 8, k / 8)
    const auto& l = emu::block->mma[base + 4 * (r % 8) + (k % 8) / 2];
    return bf16_half(l.a[(r / 8) + 2 * (k / 8)], k % 2);
  };
  auto B = [&](int k, int n) {
    const auto& l = emu::block->mma[base + 4 * n + (k % 8) / 2];
    return bf16_half(l.b[k / 8], k % 2);
  };
  const int g = int(t - base) / 4, q = int(t - base) % 4;
  for (int i = 0; i < 4; ++i) {
    const int r = g + 8 * (i / 2), n = 2 * q + i % 2;
    float sum = d[i];
    for (int k = 0; k < 16; ++k) sum += A(r, k) * B(k, n);
    d[i] = sum;
  }
  warp.wait();
}

inline uint32_t prmt(uint32_t a, uint32_t b, uint32_t s) {
  const uint64_t bytes = uint64_t(a) | (uint64_t(b) << 32);
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) {
    const unsigned sel = (s >> (4 * i)) & 0xF;
    unsigned byte = unsigned(bytes >> (8 * (sel & 7))) & 0xFF;
    if (sel & 8) byte = (byte & 0x80) ? 0xFF : 0x00;  // replicate the byte's sign bit
    r |= uint32_t(byte) << (8 * i);
  }
  return r;
}

// Every lane publishes its row address; lane i then reads row i / 4, 32-bit word i % 4 of
// each of the four matrices.
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  const unsigned t = threadIdx.x, base = t & ~31u;
  emu::Barrier& warp = *emu::block->warps[t / 32];
  emu::block->mma[t].row = row;
  warp.wait();
  for (unsigned j = 0; j < 4; ++j) {
    const void* matrix_row = emu::block->mma[base + 8 * j + (t - base) / 4].row;
    const auto* words = static_cast<const uint32_t*>(matrix_row);
    r[j] = words[(t - base) % 4];
  }
  warp.wait();
}

// cp.async done at once: the waits have nothing to wait for
template <int BYTES>
inline void cp_async(void* shared, const void* global, bool valid) {
  if (valid)
    std::memcpy(shared, global, BYTES);
  else
    std::memset(shared, 0, BYTES);
}
inline void cp_async_commit() {}
template <int N>
inline void cp_async_wait() {}

// fma.rn.bf16x2 a, b, -0: the float product of two bfloat16 is exact, then rounded once
inline uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t r = 0;
  for (int h = 0; h < 2; ++h) {
    const __nv_bfloat16 v = __float2bfloat16_rn(bf16_half(a, h) * bf16_half(b, h));
    r |= uint32_t(__bfloat16_as_ushort(v)) << (16 * h);
  }
  return r;
}

}  // namespace amx::cuda
