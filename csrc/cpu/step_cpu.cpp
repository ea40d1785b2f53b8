// CPU step kernels: one fused pass over the rows of a step. Rows are split
// across threads with at::parallel_for; within a row the loop over hidden
// units runs cell_units.h, which the compiler turns into SIMD code, built for
// AVX-512, AVX2 and baseline x86-64 and picked at load time.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstring>
#include <type_traits>

// For the cell math below (cells.h is included after this line):
// finite-math-only and no-signed-zeros let the clamps inside exp_ become
// single min/max instructions instead of compare-and-blend pairs, which makes
// the cell loops several times faster. NaN and inf are decided on the bits
// in cells.h, so they still come out as in torch.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("finite-math-only", "no-signed-zeros")
#endif
#include "lstm_row_avx512.h"
#include "step_cpu.h"

// x86-64-v4 is AVX-512, v3 AVX2 + FMA; GCC picks the clone by CPU features
// (clones named after a CPU model would be picked by model, not features).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define RNNKIT_SIMD_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RNNKIT_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RNNKIT_SIMD_CLONES
#endif

// On the loops over a row's units below: the gate blocks of a row (k * H + j)
// never overlap, but with H known only at run time GCC checks each pair of
// blocks written for overlap before it vectorises, and gives up past ten
// pairs (the LSTM backward row writes eight blocks: scalar code, several
// times slower). ivdep tells it the iterations are independent.
#if defined(__GNUC__) && !defined(__clang__)
#define RNNKIT_UNITS_INDEPENDENT _Pragma("GCC ivdep")
#else
#define RNNKIT_UNITS_INDEPENDENT
#endif

namespace rnnkit {
namespace {

// Enough hidden units per task that a thread's start-up cost is repaid.
constexpr int64_t kUnitsPerTask = 16384;

template <class Fn>
void for_rows(const StepShape& s, int64_t units_per_row, const Fn& fn) {
  int64_t grain = std::max<int64_t>(1, kUnitsPerTask / std::max<int64_t>(1, units_per_row));
  if (s.B <= grain) return fn(0, s.B);  // one task: skip the thread pool's bookkeeping
  at::parallel_for(0, s.B, grain, [&](int64_t b0, int64_t b1) { fn(b0, b1); });
}

template <class T>
void copy_row(T* __restrict__ dst, const T* __restrict__ src, int64_t n) {
  std::memcpy(dst, src, n * sizeof(T));
}

template <class T>
void zero_row(T* dst, int64_t n) {
  std::memset(static_cast<void*>(dst), 0, n * sizeof(T));
}

// Pulls a row that the next step will read into cache while this step runs:
// the input projections were written long before, by the big GEMM, and come
// from memory otherwise.
template <class T>
void prefetch_row(const T* row, int64_t n) {
  constexpr int64_t kLine = 64 / sizeof(T);
  for (int64_t k = 0; k < n; k += kLine) __builtin_prefetch(row + k, 0, 2);
}

// ---- the unit loops, one per cell kind and variant -------------------------

template <class T>
using ForwardUnits = void (*)(ForwardRow<T>, int64_t);
template <class T>
using BackwardUnits = void (*)(BackwardRow<T>, int64_t);

template <class T, CellKind K, bool Save, bool Project>
RNNKIT_SIMD_CLONES void forward_units(ForwardRow<T> r, int64_t n) {
  RNNKIT_UNITS_INDEPENDENT
  for (int64_t j = 0; j < n; ++j) forward_unit<T, K, Save, Project>(r, j);
}

template <class T, CellKind K, bool HasDy, bool Project>
RNNKIT_SIMD_CLONES void backward_units(BackwardRow<T> r, int64_t n) {
  RNNKIT_UNITS_INDEPENDENT
  for (int64_t j = 0; j < n; ++j) backward_unit<T, K, HasDy, Project>(r, j);
}

template <class T>
ForwardUnits<T> forward_units_for(CellKind kind, bool save, bool project) {
  if constexpr (std::is_same_v<T, float>) {
    if (kind == CellKind::LSTM) {
      if (ForwardUnits<float> fast = lstm_forward_units_avx512(save, project)) return fast;
    }
  }
  ForwardUnits<T> fn = nullptr;
  with_kind(kind, [&](auto k) {
    constexpr CellKind K = decltype(k)::value;
    if constexpr (K == CellKind::LSTM) {  // the one kind with a projection
      fn = save ? (project ? forward_units<T, K, true, true> : forward_units<T, K, true, false>)
                : (project ? forward_units<T, K, false, true> : forward_units<T, K, false, false>);
    } else {
      fn = save ? forward_units<T, K, true, false> : forward_units<T, K, false, false>;
    }
  });
  return fn;
}

template <class T>
BackwardUnits<T> backward_units_for(CellKind kind, bool has_dy, bool project) {
  BackwardUnits<T> fn = nullptr;
  // With a projection dy is inside dr: no variant has both.
  if (project) has_dy = false;
  if (kind == CellKind::LSTM && project) {
    fn = backward_units<T, CellKind::LSTM, false, true>;
    return fn;
  }
  with_kind(kind, [&](auto k) {
    constexpr CellKind K = decltype(k)::value;
    fn = has_dy ? backward_units<T, K, true, false> : backward_units<T, K, false, false>;
  });
  return fn;
}

// ---- forward ---------------------------------------------------------------

// Rows [b0, b1), units [u0, u1) of one forward step, the gates where gx and
// gh say (they point at unit u0 of their blocks).
template <class T>
void forward_block(const ForwardStep& a, int64_t b0, int64_t b1, int64_t u0, int64_t u1,
                   GateRows<const T> gx, GateRows<const T> gh) {
  const StepShape& s = a.shape;
  const int64_t P = s.P, n = u1 - u0;
  const bool project = a.r != nullptr;
  const ForwardUnits<T> units = forward_units_for<T>(s.kind, a.saved != nullptr, project);
  const T* h_prev = static_cast<const T*>(a.h_prev) + u0;
  T* h_next = static_cast<T*>(a.h_next) + u0;
  // Where c is read from one buffer and written to another, a finished row copies it.
  const T* c_prev = a.c_prev && a.c_prev != a.c ? static_cast<const T*>(a.c_prev) + u0 : nullptr;
  T* c = static_cast<T*>(a.c) + u0;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t t = time_of(s, b);
    if (t < 0) {  // finished: the state stays as it was (with a projection: project_step)
      if (!project) copy_row(h_next + b * P, h_prev + b * P, n);
      if (c_prev) copy_row(c + b * s.H, c_prev + b * s.H, n);
      continue;
    }
    const int64_t t_next = s.reverse ? t - 1 : t + 1;
    if (gx.rows_per_time != 0 && t_next >= 0 && t_next < s.T) {
      for (int64_t k = 0; k < gate_count(s.kind); ++k) prefetch_row(gx.at(t_next, b) + k * gx.gate, n);
    }
    units(forward_row<T>(a, gx, gh, b, t, u0), n);
  }
}

template <class T>
void forward_step(const ForwardStep& a) {
  const StepShape& s = a.shape;
  const int64_t B = s.B, H = s.H, G = gate_count(s.kind) * H;
  const GateRows<const T> gx{static_cast<const T*>(a.gx), G, H, B};  // time-ordered
  const GateRows<const T> gh{static_cast<const T*>(a.gh), G, H, 0};
  for_rows(s, G, [&](int64_t b0, int64_t b1) { forward_block<T>(a, b0, b1, 0, H, gx, gh); });
}

template <class T>
void project_step(const ProjectStep& a) {
  for (int64_t b = 0; b < a.shape.B; ++b) {
    const ProjectRow<T> row = project_row<T>(a, b);
    for (int64_t j = 0; j < a.shape.P; ++j) project_unit(row, j);
  }
}

// ---- backward --------------------------------------------------------------

// Rows [b0, b1), units [u0, u1) of one backward step. With a projection only
// the whole of H: dh and dh_next are then P wide, the cell's units H.
template <class T>
void backward_block(const BackwardStep& a, int64_t b0, int64_t b1, int64_t u0, int64_t u1) {
  const StepShape& s = a.shape;
  const int64_t H = s.H, P = s.P, G = gate_count(s.kind) * H, n = u1 - u0;
  const bool project = a.dr != nullptr;
  const BackwardUnits<T> units = backward_units_for<T>(s.kind, a.dy != nullptr, project);
  const T* dh = static_cast<const T*>(a.dh);
  T* dh_next = static_cast<T*>(a.dh_next);
  T* dg_step = static_cast<T*>(a.dg_step);
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t t = time_of(s, b);
    if (t < 0) {  // finished: its gradient passes through untouched
      RNNKIT_UNITS_INDEPENDENT
      for (int64_t j = 0; j < n; ++j)
        carry_backward_unit(s.kind, H, project, dh + b * P + u0, dg_step + b * G + u0,
                            dh_next + b * P + u0, j);
      if (project) copy_row(dh_next + b * P, dh + b * P, P);
      continue;
    }
    units(backward_row<T>(a, b, t, u0), n);
    if (project) zero_row(dh_next + b * P, P);
  }
}

template <class T>
void backward_step(const BackwardStep& a) {
  const StepShape& s = a.shape;
  for_rows(s, gate_count(s.kind) * s.H,
           [&](int64_t b0, int64_t b1) { backward_block<T>(a, b0, b1, 0, s.H); });
}

template <class T>
void project_backward_step(const ProjectBackwardStep& a) {
  for (int64_t b = 0; b < a.shape.B; ++b) {
    const ProjectBackwardRow<T> row = project_backward_row<T>(a, b);
    for (int64_t j = 0; j < a.shape.P; ++j) project_backward_unit(row, j);
  }
}

// ---- the kernels as the step loop sees them ---------------------------------

#define RNNKIT_CPU_DISPATCH(dtype, fn, arg) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, #fn, [&] { fn<scalar_t>(arg); })

class CpuStepKernels final : public StepKernels {
 public:
  void forward(const ForwardStep& a) const override { RNNKIT_CPU_DISPATCH(a.shape.dtype, forward_step, a); }
  void project(const ProjectStep& a) const override { RNNKIT_CPU_DISPATCH(a.shape.dtype, project_step, a); }
  void backward(const BackwardStep& a) const override {
    RNNKIT_CPU_DISPATCH(a.shape.dtype, backward_step, a);
  }
  void project_backward(const ProjectBackwardStep& a) const override {
    RNNKIT_CPU_DISPATCH(a.shape.dtype, project_backward_step, a);
  }
  std::unique_ptr<StepGemm> step_gemm(const at::Tensor& weight, bool transposed, int64_t rows,
                                      int64_t calls) const override {
    return cpu_step_gemm(weight, transposed, rows, calls);
  }
};

}  // namespace

std::unique_ptr<StepKernels> make_cpu_step_kernels() { return std::make_unique<CpuStepKernels>(); }

void forward_block_float(const ForwardStep& a, int64_t b0, int64_t b1, int64_t u0, int64_t u1,
                         GateRows<const float> gx, GateRows<const float> gh) {
  forward_block<float>(a, b0, b1, u0, u1, gx, gh);
}

void backward_block_float(const BackwardStep& a, int64_t b0, int64_t b1, int64_t u0, int64_t u1) {
  backward_block<float>(a, b0, b1, u0, u1);
}

}  // namespace rnnkit
