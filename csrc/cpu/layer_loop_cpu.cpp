#include "layer_loop_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Config.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include <unistd.h>

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

// The units one thread owns, and where its packed block of W_hh (and of
// W_ih, when the forward loop projects the input itself) starts.
struct Part {
  int64_t u0, u1;
  int64_t packed_hh = 0, packed_ih = 0;  // offsets in floats
};

// Splits the H units into parts of whole vectors, one part per thread, or a
// single part when a step has too little work (`macs` multiply-adds) to share.
std::vector<Part> split_units(int64_t H, int64_t macs) {
  const int64_t threads = macs < kParallelMacs ? 1 : at::get_num_threads();
  const int64_t max_parts = std::max<int64_t>(1, std::min(threads, H / kUnitsAlign));
  const int64_t chunk =
      (((H + max_parts - 1) / max_parts + kUnitsAlign - 1) / kUnitsAlign) * kUnitsAlign;
  std::vector<Part> parts;
  for (int64_t u0 = 0; u0 < H; u0 += chunk) parts.push_back({u0, std::min(H, u0 + chunk)});
  return parts;
}

// Rounds a count of floats up to whole cache lines, so that every buffer
// carved out of the scratch starts on one.
int64_t whole_lines(int64_t floats) { return (floats + 15) / 16 * 16; }

// Floats (whole lines) that MKL's packed copy of a (k, n) right-hand matrix
// takes, for a GEMM with B rows.
int64_t packed_floats(int64_t B, int64_t n, int64_t k) {
  return whole_lines(mkl::packed_b_floats(B, n, k));
}

// Gathers a part's rows of a (K * H, cols) gate weight, gate after gate,
// into `rows` and packs them (transposed: the GEMM multiplies by W^T).
void pack_part_rows(const float* w, int64_t K, int64_t H, int64_t cols, int64_t B,
                    const Part& part, float* rows, float* packed) {
  const int64_t n = part.u1 - part.u0;
  for (int64_t k = 0; k < K; ++k)
    std::memcpy(rows + k * n * cols, w + (k * H + part.u0) * cols, n * cols * sizeof(float));
  cblas_sgemm_pack(mkl::kRowMajor, mkl::kBMatrix, mkl::kTrans, B, K * n, cols, 1.0f, rows, cols,
                   packed);
}

// The loops' scratch (packed weights, gathered rows, a step's input
// projections), kept by the calling thread from one call to the next: fresh
// memory of this size comes from mmap, and faulting its pages in on every
// call cost about as much as the packing itself. Only buffers up to
// kKeptScratchFloats are kept; larger ones are freed when the call returns.
constexpr int64_t kKeptScratchFloats = int64_t(16) << 20;  // 64 MiB

float* loop_scratch(int64_t floats, at::Tensor& oversized) {
  thread_local at::Tensor kept;
  if (floats > kKeptScratchFloats) {
    oversized = at::empty({floats}, at::TensorOptions().dtype(at::kFloat));
    return oversized.data_ptr<float>();
  }
  if (!kept.defined() || kept.numel() < floats)
    kept = at::empty({floats}, at::TensorOptions().dtype(at::kFloat));
  return kept.data_ptr<float>();
}

// Whether the forward loop should project the input itself, with `weights`
// floats of W_hh and W_ih rows per thread. It then reads its rows of W_ih
// every step instead of once for one big GEMM: that pays once a step has
// enough rows to reuse them, fewer where they stay in the core's cache beside
// its rows of W_hh. Measured here (2 MiB L2, LSTM inference, 2 threads),
// rnnkit's time per step, in the loop / one big GEMM first: H=256 (1 MiB of
// rows a thread) B=1 12.5 / 9.2 us, B=4 18.8 / 18.3, B=8 29.1 / 30.3,
// B=64 191 / 210; H=512 (4 MiB) B=8 173 / 114, B=16 255 / 221,
// B=32 425 / 458, B=64 815 / 980.
constexpr int64_t kRowsForCachedWeights = 8;
constexpr int64_t kRowsForStreamedWeights = 32;

bool project_input_pays(int64_t B, int64_t weights) {
  static const int64_t cache_bytes = [] {
#ifdef _SC_LEVEL2_CACHE_SIZE  // glibc; elsewhere, and where it reports 0, a guess
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#else
    const long l2 = 0;
#endif
    return l2 > 0 ? static_cast<int64_t>(l2) : int64_t(1) << 20;
  }();
  const bool cached = weights * int64_t(sizeof(float)) <= cache_bytes * 3 / 4;
  return B >= (cached ? kRowsForCachedWeights : kRowsForStreamedWeights);
}

// Where a time loop applies at all: float32, MKL's packed GEMM at hand, not
// already inside a parallel region, sizes that fit MKL's int.
bool loop_applies(const StepShape& s, int64_t other_size) {
  return s.dtype == at::kFloat && s.B > 0 && s.T > 0 && mkl::packing_available() &&
         !at::in_parallel_region() && mkl::fits_int(s.B) &&
         mkl::fits_int(gate_count(s.kind) * s.H) && mkl::fits_int(s.P) &&
         mkl::fits_int(other_size);
}

// Runs fn(p0, p1) on the threads, each with its own range of parts and with
// MKL kept to the calling thread (each thread runs its own GEMMs).
template <class Fn>
void run_parts(int64_t n_parts, const Fn& fn) {
  at::parallel_for(0, n_parts, 1, [&](int64_t p0, int64_t p1) {
    const mkl::OneThread one_thread;
    fn(p0, p1);
  });
}

}  // namespace

bool forward_loop_cpu(const ForwardLoop& loop) {
#if !AT_PARALLEL_OPENMP
  return false;  // other backends may run parts one after another: a barrier would wait forever
#else
  const ForwardStep& a = loop.step;
  const StepShape& s = a.shape;
  const int64_t T = s.T, B = s.B, H = s.H, P = s.P, I = loop.I, K = gate_count(s.kind), G = K * H;
  const bool projects_input = a.gx == nullptr;
  if (projects_input && (loop.x == nullptr || I == 0)) return false;
  if (a.r != nullptr || !loop_applies(s, I)) return false;
  // In reverse each row of its own length starts at its own time: the rows
  // of a step are not one block of x.
  if (projects_input && s.reverse && s.lengths != nullptr) return false;

  std::vector<Part> parts = split_units(H, B * G * (P + (projects_input ? I : 0)));
  if (projects_input && !project_input_pays(B, K * (parts[0].u1 - parts[0].u0) * (P + I)))
    return false;
  int64_t packed_total = 0;
  for (Part& part : parts) {
    const int64_t kn = K * (part.u1 - part.u0);
    part.packed_hh = packed_total;
    packed_total += packed_floats(B, kn, P);
    part.packed_ih = packed_total;
    if (projects_input) packed_total += packed_floats(B, kn, I);
  }
  const int64_t n_parts = static_cast<int64_t>(parts.size());

  // Everything is allocated here, before the threads start: nothing in the
  // parallel region can throw and leave the others waiting at the barrier.
  const int64_t row_floats = projects_input ? std::max(P, I) : P;
  const int64_t gathered_floats = whole_lines(G * row_floats);
  const int64_t gx_step_floats = whole_lines(projects_input ? B * G : 0);
  at::Tensor oversized;
  float* const gathered = loop_scratch(gathered_floats + gx_step_floats + packed_total, oversized);
  // The step's input projections, each part's (B, K * n) block at B * K * u0.
  float* const gx_step = gathered + gathered_floats;
  float* const packed_all = gx_step + gx_step_floats;
  const float* w_hh = static_cast<const float*>(loop.w_hh);
  const float* w_ih = static_cast<const float*>(loop.w_ih);
  const float* x = static_cast<const float*>(loop.x);
  float* gh_all = static_cast<float*>(loop.gh);  // part p's (B, K * n) block at B * K * u0
  StepBarrier barrier(n_parts);

  run_parts(n_parts, [&](int64_t p0, int64_t p1) {
    // Pack this thread's rows: they stay in its cache. The gathered rows of
    // W_hh and of W_ih take turns in the same scratch.
    for (int64_t p = p0; p < p1; ++p) {
      const Part& part = parts[p];
      float* rows = gathered + K * part.u0 * row_floats;
      pack_part_rows(w_hh, K, H, P, B, part, rows, packed_all + part.packed_hh);
      if (projects_input) pack_part_rows(w_ih, K, H, I, B, part, rows, packed_all + part.packed_ih);
    }
    // The input projections of one step for this thread's parts; they depend
    // on no state, so the thread computes the next step's before the barrier.
    auto project_input = [&](int64_t step_index) {
      const float* x_t = x + (s.reverse ? T - 1 - step_index : step_index) * B * I;
      for (int64_t p = p0; p < p1; ++p) {
        const Part& part = parts[p];
        const int64_t kn = K * (part.u1 - part.u0);
        cblas_sgemm_compute(mkl::kRowMajor, mkl::kNoTrans, mkl::kPacked, B, kn, I, x_t, I,
                            packed_all + part.packed_ih, kn, 0.0f,
                            gx_step + B * K * part.u0, kn);
      }
    };
    if (projects_input) project_input(0);

    ForwardStep step = a;
    void* h_cur = loop.h_cur;
    void* h_next = loop.h_spare;
    for (int64_t t = 0; t < T; ++t) {
      step.shape.step = t;
      step.h_prev = h_cur;
      step.h_next = h_next;
      for (int64_t p = p0; p < p1; ++p) {
        const Part& part = parts[p];
        const int64_t n = part.u1 - part.u0;
        float* gh = gh_all + B * K * part.u0;
        cblas_sgemm_compute(mkl::kRowMajor, mkl::kNoTrans, mkl::kPacked, B, K * n, P,
                            static_cast<const float*>(h_cur), P, packed_all + part.packed_hh,
                            K * n, 0.0f, gh, K * n);
        const GateRows<float> gx =
            projects_input
                ? GateRows<float>{gx_step + B * K * part.u0, K * n, n, 0}
                : GateRows<float>{static_cast<const float*>(a.gx) + part.u0, G, H, B};
        forward_block_float(step, 0, B, part.u0, part.u1, gx, {gh, K * n, n, 0});
      }
      if (projects_input && t + 1 < T) project_input(t + 1);
      barrier.wait(p1 - p0);
      std::swap(h_cur, h_next);
    }
  });
  // After an odd number of steps the final state sits in the spare buffer.
  if (T % 2 == 1) std::memcpy(loop.h_cur, loop.h_spare, B * P * sizeof(float));
  return true;
#endif
}

bool backward_loop_cpu(const BackwardLoop& loop) {
#if !AT_PARALLEL_OPENMP
  return false;  // as forward_loop_cpu
#else
  const BackwardStep& a = loop.step;
  const StepShape& s = a.shape;
  const int64_t T = s.T, B = s.B, H = s.H, P = s.P, G = gate_count(s.kind) * H;
  if (a.dr != nullptr || !loop_applies(s, 0)) return false;

  // A thread's units of dh_prev need every gate of the step's gradient
  // (dg W_hh): it owns columns [u0, u1) of W_hh, packed as they stand.
  std::vector<Part> parts = split_units(H, B * G * P);
  int64_t packed_total = 0;
  for (Part& part : parts) {
    part.packed_hh = packed_total;
    packed_total += packed_floats(B, part.u1 - part.u0, G);
  }
  const int64_t n_parts = static_cast<int64_t>(parts.size());
  at::Tensor oversized;
  float* const packed_all = loop_scratch(packed_total, oversized);
  const float* w_hh = static_cast<const float*>(loop.w_hh);
  StepBarrier barrier(n_parts);

  run_parts(n_parts, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const Part& part = parts[p];
      cblas_sgemm_pack(mkl::kRowMajor, mkl::kBMatrix, mkl::kNoTrans, B, part.u1 - part.u0, G,
                       1.0f, w_hh + part.u0, P, packed_all + part.packed_hh);
    }
    BackwardStep step = a;
    void* dh_cur = loop.dh_cur;
    void* dh_next = loop.dh_spare;
    for (int64_t t = T - 1; t >= 0; --t) {
      step.shape.step = t;
      step.dh = dh_cur;
      step.dh_next = dh_next;
      // Two buffers: a thread may write this step's gate gradients while
      // another still reads the last step's in its GEMM.
      step.dg_step = loop.dg_step[t % 2];
      for (int64_t p = p0; p < p1; ++p)
        backward_block_float(step, 0, B, parts[p].u0, parts[p].u1);
      barrier.wait(p1 - p0);
      // dh_prev = (the cell's direct part) + dg W_hh, this thread's units;
      // the next step's cell reads only those.
      for (int64_t p = p0; p < p1; ++p) {
        const Part& part = parts[p];
        const int64_t n = part.u1 - part.u0;
        cblas_sgemm_compute(mkl::kRowMajor, mkl::kNoTrans, mkl::kPacked, B, n, G,
                            static_cast<const float*>(step.dg_step), G,
                            packed_all + part.packed_hh, n, 1.0f,
                            static_cast<float*>(dh_next) + part.u0, P);
      }
      std::swap(dh_cur, dh_next);
    }
  });
  // After an odd number of steps the gradient of h0 sits in the spare buffer.
  if (T % 2 == 1) std::memcpy(loop.dh_cur, loop.dh_spare, B * P * sizeof(float));
  return true;
#endif
}

}  // namespace rnnkit
