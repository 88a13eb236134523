// Shared support for ms_optim AOT kernels (mindspore.ops.Custom, func_type="aot").
//
// Every kernel has the MindSpore AOT signature
//   extern "C" int Fn(int nparam, void **params, int *ndims, int64_t **shapes,
//                     const char **dtypes, void *stream, void *extra);
// where params holds the inputs followed by the outputs. Kernels validate what they receive and return a
// non-zero error code instead of touching memory they were not given.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <new>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#include <system_error>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace ms_optim {

// Error codes returned to MindSpore (anything non-zero makes it raise).
enum Status : int {
  kOk = 0,
  kBadArgCount = 1,
  kBadDtype = 2,
  kBadShape = 3,
  kBadScalar = 4,
  kBadIndex = 5,
  kBadLayout = 6,
};

inline const char *StatusName(int code) {
  switch (code) {
    case kBadArgCount: return "wrong number of arguments";
    case kBadDtype: return "unsupported or mismatched dtype";
    case kBadShape: return "mismatched shape";
    case kBadScalar: return "bad scalar argument";
    case kBadIndex: return "index out of range";
    case kBadLayout: return "8-bit state of another layout";
    default: return "error";
  }
}

// Why the last call on this thread was refused; set by Reject, read by the export wrapper (and by C callers
// through MsOptimLastError).
inline std::string &LastError() {
  thread_local std::string message;
  return message;
}

// Records what was wrong (printf-style; name the argument and the values) and returns `code`. Every refusal
// goes through here, so the user sees the kernel, the argument and the reason instead of a bare number.
__attribute__((format(printf, 2, 3))) inline int Reject(int code, const char *format, ...) {
  char buffer[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buffer, sizeof(buffer), format, args);
  va_end(args);
  LastError() = buffer;
  return code;
}

enum class DType { kF32, kF16, kBF16, kI32, kI64, kOther };

inline DType ParseDType(const char *name) {
  if (std::strcmp(name, "float32") == 0 || std::strcmp(name, "float") == 0) return DType::kF32;
  if (std::strcmp(name, "float16") == 0) return DType::kF16;
  if (std::strcmp(name, "bfloat16") == 0) return DType::kBF16;
  if (std::strcmp(name, "int32") == 0 || std::strcmp(name, "int") == 0) return DType::kI32;
  if (std::strcmp(name, "int64") == 0) return DType::kI64;
  return DType::kOther;
}

inline int64_t NumElements(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

inline bool SameShape(int ndim_a, const int64_t *a, int ndim_b, const int64_t *b) {
  if (ndim_a != ndim_b) return false;
  for (int i = 0; i < ndim_a; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

// A view of the AOT argument arrays with bounds-checked accessors.
struct AotArgs {
  int nparam;
  void **params;
  int *ndims;
  int64_t **shapes;
  const char **dtypes;

  int64_t numel(int i) const { return NumElements(ndims[i], shapes[i]); }
  DType dtype(int i) const { return ParseDType(dtypes[i]); }
  bool same_shape(int i, int j) const { return SameShape(ndims[i], shapes[i], ndims[j], shapes[j]); }
  // A float32 tensor holding exactly one element (0-d or shape (1,)).
  bool is_f32_scalar(int i) const { return dtype(i) == DType::kF32 && numel(i) == 1; }
  float scalar(int i) const { return *static_cast<const float *>(params[i]); }
  // "[3, 4]", for messages
  std::string shape_str(int i) const {
    std::string out = "[";
    for (int d = 0; d < ndims[i]; ++d) out += (d ? ", " : "") + std::to_string(shapes[i][d]);
    return out + "]";
  }
  // Refusal helpers: the named argument `name` (input i) against `other` (input j).
  int reject_shape(int i, const char *name, int j, const char *other) const {
    return Reject(kBadShape, "'%s' has shape %s, but '%s' has %s", name, shape_str(i).c_str(), other,
                  shape_str(j).c_str());
  }
  int reject_dtype(int i, const char *name, const char *want) const {
    return Reject(kBadDtype, "'%s' has dtype %s, expected %s", name, dtypes[i], want);
  }
  int reject_scalar(int i, const char *name) const {
    return Reject(kBadScalar, "'%s' must be a float32 scalar, but has dtype %s and shape %s", name, dtypes[i],
                  shape_str(i).c_str());
  }
};

// The flag output of an in-place kernel (float32, one element: the update itself is the side effect): checked
// with the inputs, before anything is written, then set.
inline int SetFlag(const AotArgs &a, int out) {
  if (a.dtype(out) != DType::kF32 || a.numel(out) != 1) {
    return Reject(kBadShape, "the flag output must be one float32 value, but has dtype %s and shape %s",
                  a.dtypes[out], a.shape_str(out).c_str());
  }
  *static_cast<float *>(a.params[out]) = 1.0f;
  return kOk;
}

inline int RejectArgCount(int nparam, int expected) {
  return Reject(kBadArgCount, "got %d inputs and outputs, expected %d", nparam, expected);
}

// The number of tensors of a multi-tensor kernel, whose inputs are `lists` tuples of that many tensors followed by
// `fixed` inputs and outputs; -1 (with the reason recorded) when nparam is not lists * count + fixed, count >= 1.
inline int ListCount(int nparam, int lists, int fixed) {
  const int count = (nparam - fixed) / lists;
  if (count < 1 || nparam != lists * count + fixed) {
    Reject(kBadArgCount, "got %d inputs and outputs, expected %d per tensor (at least one) and %d more", nparam, lists,
           fixed);
    return -1;
  }
  return count;
}

// ---- storage types: every kernel loads to float32, computes in float32, stores back rounded to nearest even.
struct f16_t { uint16_t bits; };
struct bf16_t { uint16_t bits; };

inline float Load(const float *p, int64_t i) { return p[i]; }
inline void Store(float *p, int64_t i, float x) { p[i] = x; }

inline float Load(const f16_t *p, int64_t i) {
  _Float16 h;
  std::memcpy(&h, &p[i], sizeof(h));
  return static_cast<float>(h);
}
inline void Store(f16_t *p, int64_t i, float x) {
  _Float16 h = static_cast<_Float16>(x);  // IEEE round-to-nearest-even, as MindSpore's Cast does
  std::memcpy(&p[i], &h, sizeof(h));
}

// bfloat16 goes through memcpy as float16 does: a member access (p[i].bits) at an odd address, which a caller's
// buffer may have, is undefined behaviour.
inline float Load(const bf16_t *p, int64_t i) {
  uint16_t bits;
  std::memcpy(&bits, &p[i], sizeof(bits));
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}
inline void Store(bf16_t *p, int64_t i, float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  uint16_t bits;
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays a quiet NaN
    bits = static_cast<uint16_t>((u >> 16) | 0x40u);
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    bits = static_cast<uint16_t>(u >> 16);
  }
  std::memcpy(&p[i], &bits, sizeof(bits));
}

// ---- threading: split [0, n) into contiguous chunks, one per thread. Element-wise kernels write disjoint
// ranges, so the result does not depend on the thread count; reductions use fixed blocks and LaneSum below.

// MS_OPTIM_NUM_THREADS above this is capped (said once on stderr): each thread is a real OS thread, and asking
// for 100000 made thread creation throw and abort the process.
constexpr int kMaxThreads = 256;

// The CPUs this process may run on: the affinity mask of its main thread (what taskset and cpusets set; the first
// kernel may run on a runtime thread that MindSpore pinned to one core), where hardware_concurrency() counts every
// CPU of the machine. A CPU quota (docker --cpus, Kubernetes limits.cpu) leaves the mask whole: set
// MS_OPTIM_NUM_THREADS there.
inline long AvailableCpus() {
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(getpid(), sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
  return static_cast<long>(std::thread::hardware_concurrency());
}

inline int NumThreads() {
  static const int threads = [] {
    const char *env = std::getenv("MS_OPTIM_NUM_THREADS");
    long t = env ? std::strtol(env, nullptr, 10) : 0;
    if (t <= 0) t = AvailableCpus();
    if (t > kMaxThreads) {
      if (env != nullptr && std::strtol(env, nullptr, 10) > 0) {
        std::fprintf(stderr, "ms_optim: MS_OPTIM_NUM_THREADS=%s is capped at %d threads\n", env, kMaxThreads);
      } else {
        std::fprintf(stderr, "ms_optim: %ld CPUs; the kernels use at most %d threads\n", t, kMaxThreads);
      }
      t = kMaxThreads;
    }
    return static_cast<int>(std::max(1L, t));
  }();
  return threads;
}

// Below this many elements a tensor is updated by the calling thread: thread start-up would cost more.
constexpr int64_t kMinElementsPerThread = 1 << 15;
constexpr int64_t kChunkAlign = 64;  // keep chunk starts cache-line and SIMD aligned

// How long (microseconds) an idle worker, or a caller waiting for the workers, keeps polling before it sleeps:
// MS_OPTIM_SPIN_US (0: sleep at once), default kDefaultSpinUs, at most kMaxSpinUs. MindSpore launches one kernel
// per parameter, some 20 - 100 us apart: a worker that went to sleep in between had to be woken for each region,
// and the region waited for it (measurements and the trade-off: docs/kernels.md, "Threads").
constexpr int64_t kDefaultSpinUs = 200;
constexpr int64_t kMaxSpinUs = 1000000;

inline int64_t SpinMicroseconds() {
  static const int64_t us = [] {
    const char *env = std::getenv("MS_OPTIM_SPIN_US");
    if (env == nullptr || *env == '\0') return kDefaultSpinUs;
    char *end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    if (*end != '\0' || v < 0) {
      std::fprintf(stderr, "ms_optim: MS_OPTIM_SPIN_US=%s is not a whole number of microseconds >= 0; using %lld\n",
                   env, static_cast<long long>(kDefaultSpinUs));
      return kDefaultSpinUs;
    }
    if (v > kMaxSpinUs) {
      std::fprintf(stderr, "ms_optim: MS_OPTIM_SPIN_US=%s is capped at %lld\n", env,
                   static_cast<long long>(kMaxSpinUs));
      return kMaxSpinUs;
    }
    return static_cast<int64_t>(v);
  }();
  return us;
}

// Polls done() for up to SpinMicroseconds(); whether it became true. Every 64 polls the thread also yields its
// CPU: with more threads than free CPUs (another process on a core, a restricted affinity mask, several kernel
// libraries' pools or data-parallel ranks on one host) the thread being waited for may need this very core, and
// without the yield every region waited out the whole polling time (2 threads pinned to 1 CPU, a 2^16-element
// region: about 250 us polling vs 45 us sleeping at once; with the yield no slower than sleeping, docs/kernels.md).
template <typename Pred>
bool SpinUntil(Pred &&done) {
  const int64_t limit_us = SpinMicroseconds();
  if (limit_us == 0) return done();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(limit_us);
  for (uint32_t i = 1;; ++i) {
    if (done()) return true;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
    if (i % 64 == 0) {
      if (std::chrono::steady_clock::now() >= deadline) return done();
      std::this_thread::yield();
    }
  }
}

// Worker threads kept for the life of the process: a parallel region wakes them instead of creating threads
// (kernels run several regions per parameter, back to back). One region runs at a time; a caller that finds the
// pool busy (MindSpore may launch kernels from several threads) runs its region on its own thread instead.
// Chunking never changes results, so which thread runs a chunk does not matter. Between regions workers poll for
// the next one for SpinMicroseconds(), then sleep on a condition variable.
//
// Fork safety: a child process has only the thread that called fork(). The parent's workers do not exist there,
// and the pool's mutexes may have been held by them, so the child forgets that pool (leaked, never touched) and
// starts a fresh one on first use (pthread_atfork handler).
class WorkerPool {
 public:
  static WorkerPool &Instance() {
    static std::once_flag at_fork;
    std::call_once(at_fork, [] { pthread_atfork(nullptr, nullptr, &WorkerPool::ForgetAfterFork); });
    std::lock_guard<std::mutex> lock(CreationMutex());
    WorkerPool *&pool = Slot();
    if (pool == nullptr) pool = new WorkerPool(NumThreads() - 1);  // never destroyed: workers outlive statics
    return *pool;
  }
  int workers() const { return static_cast<int>(threads_.size()); }

  // Runs task(i) for i in [0, tasks) on the workers and the calling thread; false if the pool was busy.
  template <typename Task>
  bool Run(int tasks, Task &&task) {
    std::unique_lock<std::mutex> busy(run_mutex_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    using TaskType = std::remove_reference_t<Task>;
    auto call = [](void *ctx, int i) { (*static_cast<TaskType *>(ctx))(i); };
    bool sleepers;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = {call, static_cast<void *>(&task)};
      next_task_ = 1;  // task 0 is the caller's
      tasks_ = tasks;
      pending_.store(tasks - 1, std::memory_order_relaxed);
      generation_.store(generation_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
      sleepers = sleepers_ > 0;
    }
    if (sleepers) wake_.notify_all();  // spinning workers see the new generation without it
    task(0);
    RunTasks();  // help with whatever the workers have not taken yet
    const auto all_done = [&] { return pending_.load(std::memory_order_acquire) == 0; };
    if (!SpinUntil(all_done)) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, all_done);
    }
    return true;
  }

 private:
  struct Job {
    void (*call)(void *, int);
    void *ctx;
  };

  static WorkerPool *&Slot() {
    static WorkerPool *pool = nullptr;
    return pool;
  }
  static std::mutex &CreationMutex() {
    static std::mutex *mutex = new std::mutex();
    return *mutex;
  }
  // In the child after fork(): a new creation mutex (the old one may be held by a thread that is gone) and no pool.
  static void ForgetAfterFork() {
    new (&CreationMutex()) std::mutex();
    Slot() = nullptr;
  }

  explicit WorkerPool(int workers) {
    for (int w = 0; w < workers; ++w) {
      try {
        threads_.emplace_back([this] { Loop(); });
      } catch (const std::system_error &) {  // the system refused more threads: run with those that started
        break;
      }
    }
    for (auto &t : threads_) t.detach();
  }

  // Takes and runs tasks of the current job until none is left.
  void RunTasks() {
    for (;;) {
      int i;
      Job job;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (next_task_ >= tasks_) return;
        i = next_task_++;
        job = job_;
      }
      job.call(job.ctx, i);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);  // a caller past its spin waits on done_ under this mutex
        done_.notify_all();
      }
    }
  }

  void Loop() {
    uint64_t seen = 0;
    const auto new_job = [&] { return generation_.load(std::memory_order_acquire) != seen; };
    for (;;) {
      if (!SpinUntil(new_job)) {
        std::unique_lock<std::mutex> lock(mutex_);
        ++sleepers_;
        wake_.wait(lock, new_job);
        --sleepers_;
      }
      seen = generation_.load(std::memory_order_acquire);
      RunTasks();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex run_mutex_, mutex_;
  std::condition_variable wake_, done_;
  Job job_{};
  int next_task_ = 0, tasks_ = 0, sleepers_ = 0;  // under mutex_
  std::atomic<int> pending_{0};                   // tasks of the current job not yet finished
  alignas(64) std::atomic<uint64_t> generation_{0};  // jobs started; written under mutex_, polled without it
                                                     // (its own cache line: idle workers poll it)
};

// Runs fn(begin, end) over [0, n) split into one contiguous chunk per thread, each at least `min_per_thread`
// items long and (for the default element granularity) a multiple of kChunkAlign.
template <typename Fn>
void ParallelFor(int64_t n, Fn &&fn, int64_t min_per_thread = kMinElementsPerThread, int64_t align = kChunkAlign) {
  int threads = static_cast<int>(std::min<int64_t>(NumThreads(), std::max<int64_t>(1, n / min_per_thread)));
  if (threads <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  int64_t chunk = (n + threads - 1) / threads;
  chunk = (chunk + align - 1) / align * align;
  auto task = [&](int t) {
    const int64_t begin = std::min(n, t * chunk), end = std::min(n, (t + 1) * chunk);
    if (begin < end) fn(begin, end);
  };
  if (!WorkerPool::Instance().Run(threads, task)) {
    for (int t = 0; t < threads; ++t) task(t);
  }
}

// Runs fn(t, begin, end) over the items [0, items[t]) of `count` tensors in one ParallelFor: the tensors' items laid
// end to end (each tensor's start rounded up to `align` items, so that every chunk boundary falls on a multiple of
// `align` inside its tensor), one contiguous chunk per thread, split where it crosses from one tensor to the next.
// One parallel region for all the tensors of a step, where one kernel call per tensor made one region each.
template <typename Fn>
void ParallelForTensors(int count, const int64_t *items, Fn &&fn, int64_t min_per_thread = kMinElementsPerThread,
                        int64_t align = kChunkAlign) {
  std::vector<int64_t> start(count + 1, 0);
  for (int t = 0; t < count; ++t) start[t + 1] = start[t] + (items[t] + align - 1) / align * align;
  ParallelFor(start[count], [&](int64_t begin, int64_t end) {
    for (int t = 0; t < count; ++t) {
      const int64_t lo = std::max(begin, start[t]) - start[t], hi = std::min(end - start[t], items[t]);
      if (lo < hi) fn(t, lo, hi);
    }
  }, min_per_thread, align);
}

// Sum of x[0..n) in a fixed order that does not depend on threads: kLanes interleaved partial sums (which the
// compiler vectorizes), then the lanes added in order.
constexpr int kLanes = 16;

template <typename Fn>
inline float LaneSum(int64_t n, Fn &&value) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lanes[l] += value(i + l);
  }
  for (int l = 0; i < n; ++i, ++l) lanes[l] += value(i);
  float total = 0.0f;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  return total;
}

// Calls fn(typed pointer...) with the pointer cast to the storage type named by `dtype`;
// returns kBadDtype for anything but float32/float16/bfloat16.
template <typename Fn>
int DispatchFloat(DType dtype, Fn &&fn) {
  switch (dtype) {
    case DType::kF32: return fn(float{});
    case DType::kF16: return fn(f16_t{});
    case DType::kBF16: return fn(bf16_t{});
    default: return Reject(kBadDtype, "parameters and their state must be float32, float16 or bfloat16");
  }
}

// The same for a (parameter, state) pair of storage types: fn(P{}, S{}).
template <typename Fn>
int DispatchFloatPair(DType param_dtype, DType state_dtype, Fn &&fn) {
  return DispatchFloat(param_dtype, [&](auto param_tag) {
    return DispatchFloat(state_dtype, [&](auto state_tag) { return fn(param_tag, state_tag); });
  });
}

// An input of a multi-tensor kernel that holds one float32 value for every tensor of the call or one per tensor
// (group learning rates and weight decays, per-parameter clipping factors); PerTensorScalar reads tensor t's.
inline int CheckPerTensorScalar(const AotArgs &a, int i, const char *name, int count) {
  const int64_t n = a.numel(i);
  if (a.dtype(i) != DType::kF32 || (n != 1 && n != count)) {
    return Reject(kBadScalar, "'%s' must be a float32 tensor of 1 or %d values (one per tensor), but has dtype %s "
                  "and shape %s", name, count, a.dtypes[i], a.shape_str(i).c_str());
  }
  return kOk;
}
inline float PerTensorScalar(const AotArgs &a, int i, int t) {
  return static_cast<const float *>(a.params[i])[a.numel(i) == 1 ? 0 : t];
}

// The same for a float32 vector of `size` values (a family's per-parameter hyper-parameters: AdaBelief's 7, CAME's
// 8): `size` values for every tensor of the call, or `size` per tensor; PerTensorValues points at tensor t's.
inline int CheckPerTensorValues(const AotArgs &a, int i, const char *name, int size, int count) {
  const int64_t n = a.numel(i);
  if (a.dtype(i) != DType::kF32 || (n != size && n != int64_t{size} * count)) {
    return Reject(kBadScalar, "'%s' must be %d float32 values (or %d per tensor of a call of %d), but has dtype %s "
                  "and shape %s", name, size, size, count, a.dtypes[i], a.shape_str(i).c_str());
  }
  return kOk;
}
inline const float *PerTensorValues(const AotArgs &a, int i, int size, int t) {
  return static_cast<const float *>(a.params[i]) + (a.numel(i) == size ? 0 : int64_t{size} * t);
}

inline bool IsStorageType(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }
inline constexpr const char *kStorageTypes = "float32, float16 or bfloat16";

// "accum" for one tensor, "accum[3]" for tensor 3 of several: the names of refusals.
inline std::string TensorName(const char *name, int t, int count) {
  return count == 1 ? std::string(name) : std::string(name) + "[" + std::to_string(t) + "]";
}

// The checks a multi-tensor kernel (Adagrad, Adam) makes of tensor t of `count`, in two parts around its own
// state-dtype checks: a state tensor (input state_first + t, named `state`; once per state list) and the gradient
// have the parameter's shape; then the gradient has the parameter's dtype, a storage type.
struct TensorChecks {
  const AotArgs &a;
  int t, count, param, grad;  // param, grad: the first index of each list

  int shapes(int state_first, const char *state) const {
    const std::string name = TensorName("param", t, count);
    if (!a.same_shape(state_first + t, param + t)) {
      return a.reject_shape(state_first + t, TensorName(state, t, count).c_str(), param + t, name.c_str());
    }
    if (!a.same_shape(grad + t, param + t)) {
      return a.reject_shape(grad + t, TensorName("grad", t, count).c_str(), param + t, name.c_str());
    }
    return kOk;
  }
  int dtypes() const {
    if (a.dtype(grad + t) != a.dtype(param + t)) {
      return a.reject_dtype(grad + t, TensorName("grad", t, count).c_str(), a.dtypes[param + t]);
    }
    if (!IsStorageType(a.dtype(param + t))) {
      return a.reject_dtype(param + t, TensorName("param", t, count).c_str(), kStorageTypes);
    }
    return kOk;
  }
};

}  // namespace ms_optim

// Compile the hot loops once per instruction set and pick the best at load time (GCC function multiversioning).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MS_OPTIM_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MS_OPTIM_SIMD_CLONES
#endif

namespace ms_optim {
// A refused call as MindSpore reports it: MindSpore catches std::exception around an AOT kernel and puts what()
// into its error ("... Error message is <what>"), where a bare return code would read "Return value ... is 3".
// `before_writes`: the kernel is a check that runs before anything of the step is written (MsOptimCheckRows).
[[noreturn]] inline void ThrowRefusal(const char *symbol, int code, bool before_writes = false) {
  std::string message = std::string("ms_optim kernel '") + symbol + "' refused its inputs (" + StatusName(code) +
                        ", code " + std::to_string(code) + ")";
  if (!LastError().empty()) message += ": " + LastError();
  throw std::runtime_error(message + (before_writes ? "; nothing of the step was written."
                                                    : "; this call wrote nothing (parameters updated earlier in the "
                                                      "same step keep their update)."));
}
}  // namespace ms_optim

// Exports `SYMBOL` with the AOT signature, forwarding to ms_optim::<the rest> (a function or template instance).
// MindSpore always passes its AotExtra as `extra`: a refusal is thrown for it to report. A plain C caller (the
// tests, through ctypes) passes null and gets the code, and the reason from MsOptimLastError().
#define MS_OPTIM_EXPORT_AOT(SYMBOL, BEFORE_WRITES, ...)                                                        \
  extern "C" __attribute__((visibility("default"))) int SYMBOL(int nparam, void **params, int *ndims,           \
                                                              int64_t **shapes, const char **dtypes, void *,  \
                                                              void *extra) {                                  \
    ms_optim::LastError().clear();                                                                             \
    const int status = ms_optim::__VA_ARGS__(nparam, params, ndims, shapes, dtypes);                          \
    if (status != ms_optim::kOk && extra != nullptr) ms_optim::ThrowRefusal(#SYMBOL, status, BEFORE_WRITES);  \
    return status;                                                                                             \
  }
#define MS_OPTIM_EXPORT_KERNEL(SYMBOL, ...) MS_OPTIM_EXPORT_AOT(SYMBOL, false, __VA_ARGS__)
// A check that runs before any write of the step (its refusal says so).
#define MS_OPTIM_EXPORT_CHECK(SYMBOL, ...) MS_OPTIM_EXPORT_AOT(SYMBOL, true, __VA_ARGS__)

// Exported once per library (each family's .cc invokes it): the reason for the last refusal on this thread.
#define MS_OPTIM_EXPORT_LAST_ERROR()                                                                           \
  extern "C" __attribute__((visibility("default"))) const char *MsOptimLastError() {                           \
    return ms_optim::LastError().c_str();                                                                      \
  }
