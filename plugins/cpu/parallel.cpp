// run_tasks() (parallel.h) and amx_cpu_set_parallel (amx_cpu.h).
#include "parallel.h"

#include "amx_cpu.h"

namespace amx::cpu {

namespace {

struct Runner {
  amx_parallel_fn run = nullptr;
  void* context = nullptr;
};
// Per thread: a task that itself loops in parallel on a pool's worker finds no runner there
// and runs its loop on that worker.
thread_local Runner runner;

}  // namespace

void run_tasks(size_t tasks, TaskFn fn, void* data) {
  if (runner.run != nullptr) {
    runner.run(runner.context, fn, tasks, data);
    return;
  }
  for (size_t t = 0; t < tasks; ++t) fn(data, t);
}

}  // namespace amx::cpu

extern "C" void amx_cpu_set_parallel(amx_parallel_fn run, void* context) {
  amx::cpu::runner = amx::cpu::Runner{run, run != nullptr ? context : nullptr};
}
