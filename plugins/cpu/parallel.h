// The kernels' parallel loops (not part of the C ABI). Every loop hands its tasks to
// run_tasks(), which runs them on the runner installed for the calling thread
// (amx_cpu_set_parallel: libamx_ort.so installs onnxruntime's intra-op thread pool around each
// op) or, without one, on the calling thread. The kernels start no threads of their own: an
// OpenMP team of their own fought onnxruntime's pool and every other process for the cores
// (a team waits at its barrier for a thread the OS has parked: at load 8 on 2 cores, M = 1 at
// 4096x4096 took 20 ms with two OpenMP threads and 0.16 ms on one).
//
// Bit-exact on any number of threads: task boundaries depend on the shapes only, each output
// is written by exactly one task, and a task sums each output in a fixed order. A task may run
// on any thread, and twice (a runner that fails part-way runs them all again): tasks only
// write their outputs, never read them.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace amx::cpu {

// Below this many elements a loop runs on the calling thread: waking other threads costs more
// than quantizing a decode step's few thousand values.
constexpr int64_t kParallelElements = 1 << 16;
// Elements per task above that: ~20 us of quantization, far above a pool's cost per task.
constexpr int64_t kTaskElements = 1 << 14;

// Multiply-adds per matmul task: at M = 1 and K = 4096, 128 weight rows, ~5 us with VNNI (a
// product smaller than that runs on the calling thread).
constexpr int64_t kTaskMacs = 1 << 19;

using TaskFn = void (*)(void* data, size_t task);
// fn(data, t) for every t in [0, tasks), on the installed runner or the fallback; returns when
// all have run.
void run_tasks(size_t tasks, TaskFn fn, void* data);

// body(t) for every task t in [0, tasks); a single task runs on the calling thread.
template <typename Body>
void parallel_for(int64_t tasks, const Body& body) {
  if (tasks <= 0) return;
  if (tasks == 1) {
    body(int64_t(0));
    return;
  }
  run_tasks(
      size_t(tasks),
      [](void* data, size_t t) { (*static_cast<const Body*>(data))(int64_t(t)); },
      const_cast<void*>(static_cast<const void*>(&body)));
}

// The tasks for `count` items at about `grain` items each.
inline int64_t tasks_for(int64_t count, int64_t grain) {
  grain = std::max<int64_t>(grain, 1);
  return (count + grain - 1) / grain;
}

// The first item of task t of `tasks` over [0, count) (t = tasks: count). Task sizes differ by
// at most one, so no short last task leaves a thread idle while the others finish (SmolLM2's
// 1536-column layers, 96 column groups at grain 56: 48 + 48, not 56 + 40).
inline int64_t task_begin(int64_t t, int64_t count, int64_t tasks) { return t * count / tasks; }

// body(begin, end) over [0, count) in tasks_for(count, grain) ranges.
template <typename Body>
void parallel_ranges(int64_t count, int64_t grain, const Body& body) {
  if (count <= 0) return;
  const int64_t tasks = tasks_for(count, grain);
  parallel_for(tasks, [&](int64_t t) {
    body(task_begin(t, count, tasks), task_begin(t + 1, count, tasks));
  });
}

// Items per task for `count` items of `item_elements` elements each: all on the calling thread
// below kParallelElements, else about kTaskElements per task.
inline int64_t grain_for(int64_t count, int64_t item_elements) {
  if (count * item_elements < kParallelElements) return std::max<int64_t>(count, 1);
  return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(item_elements, 1));
}

// Items per task where each costs `item_macs` multiply-adds: about kTaskMacs per task.
inline int64_t grain_for_macs(int64_t item_macs) {
  return std::max<int64_t>(1, kTaskMacs / std::max<int64_t>(item_macs, 1));
}

}  // namespace amx::cpu
