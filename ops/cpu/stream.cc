// STREAM-style triads for `python -m ms_optim bench`: the memory bandwidth the kernels' memory-traffic bounds are
// measured against, built like the kernels (same compiler flags, SIMD clones, thread pool and thread count).
// Not a MindSpore kernel: the benchmark calls these through ctypes.
//   MsOptimStreamTriad:        a = b + s * c   (reads b, c; writes a: 12 B/element, 16 B with the write-allocate
//                                               read of a that ordinary stores cause)
//   MsOptimStreamTriadInPlace: a = a + s * c   (reads a, c; writes a: 12 B/element, every written line read
//                                               first, as the optimizer kernels update in place)
#include "aot_support.h"

namespace ms_optim {
namespace {

MS_OPTIM_SIMD_CLONES void TriadRange(int64_t begin, int64_t end, float *__restrict a, const float *__restrict b,
                                     const float *__restrict c, float s) {
  for (int64_t i = begin; i < end; ++i) a[i] = b[i] + s * c[i];
}

MS_OPTIM_SIMD_CLONES void TriadInPlaceRange(int64_t begin, int64_t end, float *__restrict a,
                                            const float *__restrict c, float s) {
  for (int64_t i = begin; i < end; ++i) a[i] = a[i] + s * c[i];
}

}  // namespace
}  // namespace ms_optim

MS_OPTIM_EXPORT_LAST_ERROR()

extern "C" __attribute__((visibility("default"))) void MsOptimStreamTriad(float *a, const float *b, const float *c,
                                                                          float s, int64_t n) {
  ms_optim::ParallelFor(n, [&](int64_t begin, int64_t end) { ms_optim::TriadRange(begin, end, a, b, c, s); });
}

extern "C" __attribute__((visibility("default"))) void MsOptimStreamTriadInPlace(float *a, const float *c, float s,
                                                                                 int64_t n) {
  ms_optim::ParallelFor(n, [&](int64_t begin, int64_t end) { ms_optim::TriadInPlaceRange(begin, end, a, c, s); });
}

// The thread count the kernels use (MS_OPTIM_NUM_THREADS, else the CPUs the process may run on).
extern "C" __attribute__((visibility("default"))) int MsOptimStreamThreads() { return ms_optim::NumThreads(); }
