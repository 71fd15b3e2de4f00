// The trap handler of benchmarks/isa_mask.py: in a copy of onnxruntime's libraries every
// CPUID became "int3; marker 1" and every XGETBV "int3; marker 2, 2" (the same lengths). Each
// trap runs the real instruction here and hides the features above the chosen tier, as a CPU
// without them would report them: onnxruntime then dispatches its MLAS kernels exactly as on
// such a CPU, and runs them natively. Built and loaded by isa_mask.py, before onnxruntime is.
#define _GNU_SOURCE
#include <cpuid.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

// CPUID leaf 7 subleaf 0: EBX AVX512F, DQ, IFMA, PF, ER, CD, BW, VL; ECX AVX512_VBMI,
// VBMI2, VNNI, BITALG, VPOPCNTDQ; EDX 4VNNIW, 4FMAPS, VP2INTERSECT, FP16, AMX-BF16, -TILE,
// -INT8. Subleaf 1, EAX: AVX-VNNI (bit 4, kept for the avx-vnni tier), AVX512_BF16,
// AMX-FP16, AVX-IFMA; EDX: AVX-VNNI-INT8, AVX-NE-CONVERT, AMX-COMPLEX, AVX-VNNI-INT16, AVX10.
static const uint32_t kLeaf7Ebx = 0xDC230000u, kLeaf7Ecx = 0x00005842u;
static const uint32_t kLeaf7Edx = 0x03C0010Cu;
static const uint32_t kLeaf71Eax = 0x00A00020u, kAvxVnni = 0x10u, kLeaf71Edx = 0x00080530u;
// XCR0: the opmask, ZMM_Hi256 and Hi16_ZMM states (what an OS without AVX-512 leaves off)
static const uint64_t kXcr0Avx512 = 0xE0u;

static int keep_avx_vnni;
static volatile long trap_count;

static void on_trap(int sig, siginfo_t* info, void* context) {
  (void)info;
  greg_t* r = ((ucontext_t*)context)->uc_mcontext.gregs;
  const uint8_t* at = (const uint8_t*)r[REG_RIP] - 1;  // int3 leaves RIP past itself
  if (sig != SIGTRAP || at[0] != 0xCC || (at[1] != 1 && at[1] != 2)) {
    signal(sig, SIG_DFL);  // not ours: die as without the handler
    raise(sig);
    return;
  }
  if (at[1] == 1) {
    const uint32_t leaf = (uint32_t)r[REG_RAX], sub = (uint32_t)r[REG_RCX];
    uint32_t a, b, c, d;
    __cpuid_count(leaf, sub, a, b, c, d);
    if (leaf == 7 && sub == 0) {
      b &= ~kLeaf7Ebx;
      c &= ~kLeaf7Ecx;
      d &= ~kLeaf7Edx;
    } else if (leaf == 7 && sub == 1) {
      a &= ~(kLeaf71Eax | (keep_avx_vnni ? 0u : kAvxVnni));
      d &= ~kLeaf71Edx;
    }
    // 32-bit results zero the registers' upper halves, as CPUID does
    r[REG_RAX] = a, r[REG_RBX] = b, r[REG_RCX] = c, r[REG_RDX] = d;
    r[REG_RIP] = (greg_t)(at + 2);
  } else {
    const uint32_t which = (uint32_t)r[REG_RCX];
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(which));
    uint64_t value = ((uint64_t)hi << 32) | lo;
    if (which == 0) value &= ~kXcr0Avx512;
    r[REG_RAX] = (uint32_t)value, r[REG_RDX] = (uint32_t)(value >> 32);
    r[REG_RIP] = (greg_t)(at + 3);
  }
  __atomic_add_fetch(&trap_count, 1, __ATOMIC_RELAXED);
}

// keep: 1 leaves AVX-VNNI visible (the avx-vnni tier), 0 hides it (avx2). Returns 0 or -1.
int isa_mask_install(int keep) {
  keep_avx_vnni = keep;
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = on_trap;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&action.sa_mask);
  return sigaction(SIGTRAP, &action, NULL);
}

long isa_mask_traps(void) { return __atomic_load_n(&trap_count, __ATOMIC_RELAXED); }
