#include "layer_loop_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Config.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "mkl_packed.h"

namespace rnnkit {
namespace {

// A part's units are whole vectors of floats, so its cell loop has no
// remainder but at the end of H.
constexpr int64_t kUnitsAlign = 16;
// Below this many multiply-adds per step the loop stays on one thread: the
// barrier would cost more than the split saves.
constexpr int64_t kParallelMacs = int64_t(1) << 15;

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// The threads meet here once per step. Each caller brings the number of parts
// it runs, so the barrier opens when all parts have arrived however ATen's
// parallel_for grouped them into threads.
class StepBarrier {
 public:
  explicit StepBarrier(int64_t parts) : parts_(parts) {}

  void wait(int64_t my_parts) {
    const int64_t gen = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(my_parts, std::memory_order_acq_rel) + my_parts == parts_) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(gen + 1, std::memory_order_release);
      return;
    }
    for (int64_t spins = 0; generation_.load(std::memory_order_acquire) == gen; ++spins) {
      if (spins < kSpinsBeforeYield) cpu_relax();
      else std::this_thread::yield();  // a machine with fewer free cores than threads
    }
  }

 private:
  static constexpr int64_t kSpinsBeforeYield = 1 << 14;
  const int64_t parts_;
  std::atomic<int64_t> arrived_{0};
  std::atomic<int64_t> generation_{0};
};

// The units one thread owns, and where its packed rows of W_hh start.
struct Part {
  int64_t u0, u1;
  int64_t packed_offset;  // in floats
};

}  // namespace

bool forward_loop_cpu(const ForwardLoop& loop) {
#if !AT_PARALLEL_OPENMP
  return false;  // other backends may run parts one after another: a barrier would wait forever
#else
  const ForwardStep& a = loop.step;
  const StepShape& s = a.shape;
  const int64_t B = s.B, H = s.H, P = s.P, K = gate_count(s.kind), G = K * H;
  if (s.dtype != at::kFloat || a.r != nullptr || B == 0 || s.T == 0 ||
      !mkl::packing_available() || at::in_parallel_region() || !mkl::fits_int(B) ||
      !mkl::fits_int(G) || !mkl::fits_int(P))
    return false;

  // Split the units into parts of whole vectors, one part per thread.
  const int64_t threads = B * G * P < kParallelMacs ? 1 : at::get_num_threads();
  const int64_t max_parts = std::max<int64_t>(1, std::min(threads, H / kUnitsAlign));
  const int64_t chunk = (((H + max_parts - 1) / max_parts + kUnitsAlign - 1) / kUnitsAlign) * kUnitsAlign;
  std::vector<Part> parts;
  int64_t packed_floats = 0;
  for (int64_t u0 = 0; u0 < H; u0 += chunk) {
    const int64_t u1 = std::min(H, u0 + chunk);
    parts.push_back({u0, u1, packed_floats});
    const size_t bytes = cblas_sgemm_pack_get_size(mkl::kBMatrix, B, K * (u1 - u0), P);
    packed_floats += static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float));
  }
  const int64_t n_parts = static_cast<int64_t>(parts.size());

  // Everything is allocated here, before the threads start: nothing in the
  // parallel region can throw and leave the others waiting at the barrier.
  const at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor gathered = at::empty({G * P}, f32);  // each part's rows of W_hh, gate after gate
  at::Tensor packed = at::empty({packed_floats}, f32);
  const float* w_hh = static_cast<const float*>(loop.w_hh);
  float* gh_all = static_cast<float*>(loop.gh);  // part p's (B, K * n) block at B * K * u0
  StepBarrier barrier(n_parts);

  at::parallel_for(0, n_parts, 1, [&](int64_t p0, int64_t p1) {
    const int mkl_threads = MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0;
    for (int64_t p = p0; p < p1; ++p) {  // pack this thread's rows: they stay in its cache
      const Part& part = parts[p];
      const int64_t n = part.u1 - part.u0;
      float* rows = gathered.data_ptr<float>() + K * part.u0 * P;
      for (int64_t k = 0; k < K; ++k)
        std::memcpy(rows + k * n * P, w_hh + (k * H + part.u0) * P, n * P * sizeof(float));
      cblas_sgemm_pack(mkl::kRowMajor, mkl::kBMatrix, mkl::kTrans, B, K * n, P, 1.0f, rows, P,
                       packed.data_ptr<float>() + part.packed_offset);
    }
    ForwardStep step = a;
    void* h_cur = loop.h_cur;
    void* h_next = loop.h_spare;
    for (int64_t t = 0; t < s.T; ++t) {
      step.shape.step = t;
      step.h_prev = h_cur;
      step.h_next = h_next;
      for (int64_t p = p0; p < p1; ++p) {
        const Part& part = parts[p];
        const int64_t n = part.u1 - part.u0;
        float* gh = gh_all + B * K * part.u0;
        cblas_sgemm_compute(mkl::kRowMajor, mkl::kNoTrans, mkl::kPacked, B, K * n, P,
                            static_cast<const float*>(h_cur), P,
                            packed.data_ptr<float>() + part.packed_offset, K * n, 0.0f, gh, K * n);
        forward_block_float(step, 0, B, part.u0, part.u1, gh, K * n, n);
      }
      barrier.wait(p1 - p0);
      std::swap(h_cur, h_next);
    }
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(mkl_threads);
  });
  // After an odd number of steps the final state sits in the spare buffer.
  if (s.T % 2 == 1) std::memcpy(loop.h_cur, loop.h_spare, B * P * sizeof(float));
  return true;
#endif
}

}  // namespace rnnkit
