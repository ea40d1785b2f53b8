// The CPU's fused time loops, forward and backward, as two strategies: one
// parallel region for a whole sequence, the hidden units split across the
// threads, each thread's block of W_hh packed for MKL once and kept in its
// cache, one barrier per step. "fused_loop" reads the input projections of
// one big GEMM made before the loop; "fused_loop_projecting" has each thread
// project the next step's input for its units while the others finish the
// step. float32, where torch runs ATen's parallel_for on OpenMP and carries MKL.
#include "fused_loop_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Config.h>
#include <ATen/Parallel.h>

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "mkl_packed.h"
#include "step_cpu.h"
#include "thread_gemm.h"

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
// parallel_for grouped them into threads. A waiter spins for a short while
// (the others are usually a few microseconds away), then sleeps until the
// step is complete: where there are more threads than free cores, the one it
// waits for may not be running at all, and spinning would keep it off its core.
class StepBarrier {
 public:
  explicit StepBarrier(int64_t parts) : parts_(parts) {}

  void wait(int64_t my_parts) {
    const int32_t gen = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(my_parts, std::memory_order_acq_rel) + my_parts == parts_) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(gen + 1, std::memory_order_seq_cst);
      if (sleepers_.load(std::memory_order_seq_cst) > 0) generation_.notify_all();
      return;
    }
    const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
    for (int64_t spins = 1;; ++spins) {
      if (generation_.load(std::memory_order_acquire) != gen) return;
      cpu_relax();
      if (spins % 64 == 0 && std::chrono::steady_clock::now() > spin_until) break;
    }
    // The last to arrive wakes the sleepers it sees; one that registered
    // after that look sees the new generation itself (all seq_cst).
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    for (int32_t now = generation_.load(std::memory_order_seq_cst); now == gen;
         now = generation_.load(std::memory_order_seq_cst)) {
      generation_.wait(gen, std::memory_order_seq_cst);
    }
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  static constexpr std::chrono::microseconds kSpinTime{50};
  const int64_t parts_;
  std::atomic<int64_t> arrived_{0};
  std::atomic<int32_t> generation_{0};
  std::atomic<int32_t> sleepers_{0};
};

// The cores this process may run on: more threads than that only take
// turns on them.
int64_t usable_cores() {
  static const int64_t cores = [] {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return static_cast<int64_t>(CPU_COUNT(&set));
    return static_cast<int64_t>(std::max<long>(1, sysconf(_SC_NPROCESSORS_ONLN)));
  }();
  return cores;
}

// The units one thread owns, and where its packed block of W_hh (and of
// W_ih, when the forward loop projects the input itself) starts.
struct Part {
  int64_t u0, u1;
  int64_t packed_hh = 0, packed_ih = 0;  // offsets in floats
};

// A part's GEMMs: the recurrent one and, where the loop projects the input
// itself, the input one.
struct PartGemms {
  ThreadGemm hidden, input;
};

// Splits the H units into parts of whole vectors, one part per thread (at
// most one per usable core), or a single part when a step has too little
// work (`macs` multiply-adds) to share.
std::vector<Part> split_units(int64_t H, int64_t macs) {
  const int64_t threads =
      macs < kParallelMacs ? 1 : std::min<int64_t>(at::get_num_threads(), usable_cores());
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

// Gathers a part's rows of a (K * H, cols) gate weight, gate after gate,
// into `rows` and packs them transposed (the GEMM multiplies by W^T).
void pack_part_rows(const ThreadGemm& gemm, const float* w, int64_t K, int64_t H, int64_t cols,
                    const Part& part, float* rows, float* packed) {
  const int64_t n = part.u1 - part.u0;
  for (int64_t k = 0; k < K; ++k)
    std::memcpy(rows + k * n * cols, w + (k * H + part.u0) * cols, n * cols * sizeof(float));
  gemm.pack_transposed(rows, packed);
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
// its rows of W_hh (benchmarks/results/ has the measurements behind the
// numbers of rows).
constexpr int64_t kRowsForCachedWeights = 8;
constexpr int64_t kRowsForStreamedWeights = 32;

int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
#ifdef _SC_LEVEL2_CACHE_SIZE  // glibc; elsewhere, and where it reports 0, a guess
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#else
    const long l2 = 0;
#endif
    return l2 > 0 ? static_cast<int64_t>(l2) : int64_t(1) << 20;
  }();
  return bytes;
}

bool project_input_pays(int64_t B, int64_t weights) {
  const bool cached = weights * int64_t(sizeof(float)) <= l2_cache_bytes() * 3 / 4;
  return B >= (cached ? kRowsForCachedWeights : kRowsForStreamedWeights);
}

// Why a fused loop cannot run a layer, or empty.
std::string why_no_loop(const LayerShape& s) {
#if !AT_PARALLEL_OPENMP
  // Other backends may run parts one after another: a barrier would wait forever.
  return "ATen's parallel backend is not OpenMP";
#else
  if (s.dtype != at::kFloat) return "float32 only";
  if (s.projection) return "no projection (proj_size)";
  if (thread_gemm_backend() == GemmBackend::kNone) return "no single-thread GEMM (brgemm or MKL) here";
  if (at::in_parallel_region()) return "called from inside a parallel region";
  if (!mkl::fits_int(s.B) || !mkl::fits_int(gate_count(s.kind) * s.H) || !mkl::fits_int(s.P) ||
      !mkl::fits_int(s.I))
    return "a size exceeds MKL's int";
  return {};
#endif
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

// ---- forward ---------------------------------------------------------------

void forward_loop(ForwardJob& job, bool projects_input) {
  const LayerShape& n = job.shape;
  const int64_t T = n.T, B = n.B, H = n.H, P = n.P, I = n.I, K = gate_count(n.kind), G = K * H;
  std::vector<Part> parts = split_units(H, B * G * (P + (projects_input ? I : 0)));
  std::vector<PartGemms> gemms;
  int64_t packed_total = 0;
  for (Part& part : parts) {
    const int64_t kn = K * (part.u1 - part.u0);
    gemms.push_back({ThreadGemm(B, kn, P), ThreadGemm(B, kn, projects_input ? I : 1)});
    part.packed_hh = packed_total;
    packed_total += gemms.back().hidden.packed_floats();
    part.packed_ih = packed_total;
    if (projects_input) packed_total += gemms.back().input.packed_floats();
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
  at::Tensor gh_all_t = at::empty({B * G}, job.x.options());
  at::Tensor h_spare = at::empty_like(job.h);
  const float* w_hh = job.w_hh.data_ptr<float>();
  const float* w_ih = job.w_ih.data_ptr<float>();
  const float* x = job.x.data_ptr<float>();
  float* gh_all = gh_all_t.data_ptr<float>();  // part p's (B, K * n) block at B * K * u0
  const float* gx_all = projects_input ? nullptr : job.gx.data_ptr<float>();
  const StepShape shape{n.kind, n.dtype, 0, T, B, H, P, n.reverse,
                        job.lengths.defined() ? job.lengths.data_ptr<int64_t>() : nullptr};
  const ForwardStep pointers{shape, gx_all, gh_all, job.bias.data_ptr(), nullptr, nullptr, nullptr,
                             job.c.numel() ? job.c.data_ptr() : nullptr, nullptr, job.y.data_ptr(),
                             job.saved.numel() ? job.saved.data_ptr() : nullptr};
  StepBarrier barrier(n_parts);

  run_parts(n_parts, [&](int64_t p0, int64_t p1) {
    // Pack this thread's rows: they stay in its cache. The gathered rows of
    // W_hh and of W_ih take turns in the same scratch.
    for (int64_t p = p0; p < p1; ++p) {
      const Part& part = parts[p];
      float* rows = gathered + K * part.u0 * row_floats;
      pack_part_rows(gemms[p].hidden, w_hh, K, H, P, part, rows, packed_all + part.packed_hh);
      if (projects_input)
        pack_part_rows(gemms[p].input, w_ih, K, H, I, part, rows, packed_all + part.packed_ih);
    }
    // The input projections of one step for this thread's parts; they depend
    // on no state, so the thread computes the next step's before the barrier.
    auto project_input = [&](int64_t step_index) {
      const float* x_t = x + (n.reverse ? T - 1 - step_index : step_index) * B * I;
      for (int64_t p = p0; p < p1; ++p) {
        const Part& part = parts[p];
        const int64_t kn = K * (part.u1 - part.u0);
        gemms[p].input.run(x_t, I, packed_all + part.packed_ih, gx_step + B * K * part.u0, kn,
                           false);
      }
    };
    if (projects_input) project_input(0);

    ForwardStep step = pointers;
    void* h_cur = job.h.data_ptr();
    void* h_next = h_spare.data_ptr();
    for (int64_t t = 0; t < T; ++t) {
      step.shape.step = t;
      step.h_prev = h_cur;
      step.h_next = h_next;
      for (int64_t p = p0; p < p1; ++p) {
        const Part& part = parts[p];
        const int64_t un = part.u1 - part.u0;
        float* gh = gh_all + B * K * part.u0;
        gemms[p].hidden.run(static_cast<const float*>(h_cur), P, packed_all + part.packed_hh, gh,
                            K * un, false);
        const GateRows<const float> gx =
            projects_input ? GateRows<const float>{gx_step + B * K * part.u0, K * un, un, 0}
                           : GateRows<const float>{gx_all + part.u0, G, H, B};
        forward_block_float(step, 0, B, part.u0, part.u1, gx, {gh, K * un, un, 0});
      }
      if (projects_input && t + 1 < T) project_input(t + 1);
      barrier.wait(p1 - p0);
      std::swap(h_cur, h_next);
    }
  });
  // After an odd number of steps the final state sits in the spare buffer.
  if (T % 2 == 1) job.h = h_spare;
}

// ---- backward --------------------------------------------------------------

void backward_loop(BackwardJob& job) {
  const LayerShape& n = job.shape;
  const int64_t T = n.T, B = n.B, H = n.H, P = n.P, G = gate_count(n.kind) * H;

  // A thread's units of dh_prev need every gate of the step's gradient
  // (dg W_hh): it owns columns [u0, u1) of W_hh, packed as they stand.
  std::vector<Part> parts = split_units(H, B * G * P);
  std::vector<ThreadGemm> gemms;
  int64_t packed_total = 0;
  for (Part& part : parts) {
    gemms.emplace_back(B, part.u1 - part.u0, G);
    part.packed_hh = packed_total;
    packed_total += gemms.back().packed_floats();
  }
  const int64_t n_parts = static_cast<int64_t>(parts.size());
  at::Tensor oversized;
  float* const packed_all = loop_scratch(packed_total, oversized);
  const at::TensorOptions opts = job.x.options();
  // Two gate buffers: a thread may write this step's gate gradients while
  // another still reads the last step's in its GEMM.
  const at::Tensor dg_steps = at::empty({2, B, G}, opts);
  at::Tensor dh_spare = at::empty_like(job.dh);
  const float* w_hh = job.w_hh.data_ptr<float>();
  const StepShape shape{n.kind, n.dtype, 0, T, B, H, P, n.reverse,
                        job.lengths.defined() ? job.lengths.data_ptr<int64_t>() : nullptr};
  const BackwardStep pointers{shape, job.dy.defined() ? job.dy.data_ptr() : nullptr, nullptr,
                              nullptr, job.dc.numel() ? job.dc.data_ptr() : nullptr,
                              job.h0.data_ptr(), job.c0.defined() ? job.c0.data_ptr() : nullptr,
                              job.saved.data_ptr(), job.dgx.data_ptr(), job.dgh.data_ptr(), nullptr,
                              nullptr, nullptr};
  void* const dg_buffers[2] = {dg_steps[0].data_ptr(), dg_steps[1].data_ptr()};
  StepBarrier barrier(n_parts);

  run_parts(n_parts, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const Part& part = parts[p];
      gemms[p].pack_plain(w_hh + part.u0, P, packed_all + part.packed_hh);
    }
    BackwardStep step = pointers;
    void* dh_cur = job.dh.data_ptr();
    void* dh_next = dh_spare.data_ptr();
    for (int64_t t = T - 1; t >= 0; --t) {
      step.shape.step = t;
      step.dh = dh_cur;
      step.dh_next = dh_next;
      step.dg_step = dg_buffers[t % 2];
      for (int64_t p = p0; p < p1; ++p)
        backward_block_float(step, 0, B, parts[p].u0, parts[p].u1);
      barrier.wait(p1 - p0);
      // dh_prev = (the cell's direct part) + dg W_hh, this thread's units;
      // the next step's cell reads only those.
      for (int64_t p = p0; p < p1; ++p) {
        const Part& part = parts[p];
        gemms[p].run(static_cast<const float*>(step.dg_step), G, packed_all + part.packed_hh,
                     static_cast<float*>(dh_next) + part.u0, P, true);
      }
      std::swap(dh_cur, dh_next);
    }
  });
  // After an odd number of steps the gradient of h0 sits in the spare buffer.
  if (T % 2 == 1) job.dh = dh_spare;
}

class FusedLoop final : public Strategy {
 public:
  explicit FusedLoop(bool projects_input) : projects_input_(projects_input) {}

  const char* name() const override {
    return projects_input_ ? "fused_loop_projecting" : "fused_loop";
  }

  Fit fit(const LayerShape& s, Pass pass) const override {
    if (const std::string why = why_no_loop(s); !why.empty()) return Fit::cannot(why);
    if (!projects_input_) return Fit::runs();
    if (pass == Pass::Backward) return Fit::declines("the backward loop is fused_loop's");
    if (s.I == 0) return Fit::cannot("no input features to project");
    // In reverse each row of its own length starts at its own time: the rows
    // of a step are not one block of x.
    if (s.reverse && s.lengths) return Fit::cannot("reverse with per-sequence lengths");
    const std::vector<Part> parts = split_units(s.H, s.B * gate_count(s.kind) * s.H * (s.P + s.I));
    const int64_t weights = gate_count(s.kind) * (parts[0].u1 - parts[0].u0) * (s.P + s.I);
    if (!project_input_pays(s.B, weights))
      return Fit::declines("too few rows to reuse each step's W_ih rows");
    return Fit::runs();
  }

  InputGemm input_gemm(const LayerShape&) const override {
    return projects_input_ ? InputGemm::kNone : InputGemm::kWithoutBias;
  }

  void forward(ForwardJob& job) const override { forward_loop(job, projects_input_); }
  void backward(BackwardJob& job) const override { backward_loop(job); }

 private:
  bool projects_input_;
};

}  // namespace

std::unique_ptr<Strategy> make_fused_loop(bool projects_input) {
  return std::make_unique<FusedLoop>(projects_input);
}

}  // namespace rnnkit
