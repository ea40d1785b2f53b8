// Words shared by the persistent kernels' planner, bodies, backends and entry
// points. Torch-free and CUDA-free: the CPU tests compile it with g++ alone.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "../cells.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace rnnkit {
namespace persistent {

// Element type of every tensor of a launch. F64 exists for the CPU tests
// (exact comparisons); the planner keeps float64 on the step loop.
enum class DType : int32_t { F32 = 0, F16 = 1, BF16 = 2, F64 = 3 };

// How the recurrent product is computed: FFMA on CUDA cores (strict fp32, or
// fp64 on the CPU), TF32 tensor cores (mma.sync m16n8k8, only when asked),
// or 16-bit tensor cores (mma.sync m16n8k16, float32 accumulation).
enum class MathKind : int32_t { FFMA = 0, TF32 = 1, MMA16 = 2 };

// Which blocks share one copy of W_hh and meet once a step.
//   BLOCK:   one thread block; the barrier is __syncthreads.
//   CLUSTER: a thread-block cluster; h pushed into every block's shared
//            memory (distributed shared memory), hardware cluster barrier.
//   GRID:    blocks of a cooperative grid; h exchanged through global
//            memory (L2), a software barrier on per-block step flags.
enum class GroupKind : int32_t { BLOCK = 0, CLUSTER = 1, GRID = 2 };

enum class Pass : int32_t { FORWARD = 0, BACKWARD = 1 };

enum class StatusCode : int32_t {
  OK = 0,
  DOES_NOT_APPLY = 1,    // the plan refused the shape: run the step loop instead
  INVALID_ARGUMENT = 2,  // args inconsistent with the plan, or a null pointer
  CUDA_ERROR = 3,        // a CUDA call failed (message has cudaGetErrorString)
  WATCHDOG = 4,          // a barrier waited past its limit (CPU backends report it here)
};

struct Status {
  StatusCode code = StatusCode::OK;
  char message[256] = {0};
  bool ok() const { return code == StatusCode::OK; }
};

inline Status make_status(StatusCode code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
inline Status make_status(StatusCode code, const char* fmt, ...) {
  Status s;
  s.code = code;
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(s.message, sizeof(s.message), fmt, args);
  va_end(args);
  return s;
}

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::F64: return "float64";
  }
  return "?";
}

inline const char* math_name(MathKind m) {
  switch (m) {
    case MathKind::FFMA: return "ffma";
    case MathKind::TF32: return "tf32";
    case MathKind::MMA16: return "mma16";
  }
  return "?";
}

inline const char* group_name(GroupKind g) {
  switch (g) {
    case GroupKind::BLOCK: return "G1-block";
    case GroupKind::CLUSTER: return "G2-cluster";
    case GroupKind::GRID: return "G3-grid";
  }
  return "?";
}

RNNKIT_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
RNNKIT_HD int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
RNNKIT_HD int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
RNNKIT_HD int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Time index of a row of length len (clamped to [0, T]) at step s, or -1 once
// the row has finished: the rule of time_of in csrc/step.h (s forward,
// len - 1 - s in reverse). A finished row at step s owns position s of the
// time-ordered outputs, which lies past its end in either direction: the
// kernels write zeros there, so every output element is written once.
RNNKIT_HD int64_t row_time(int64_t s, int64_t len, bool reverse) {
  if (s >= len) return -1;
  return reverse ? len - 1 - s : s;
}

// The arithmetic type for a storage type: float, but double for double.
template <class T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <class T>
using acc_t = typename AccOf<T>::type;

// Storage <-> arithmetic type, spelled out: torch builds CUDA code with the
// implicit __half / __nv_bfloat16 conversions switched off.
template <class T>
RNNKIT_HD acc_t<T> to_acc(T v) {
  return static_cast<acc_t<T>>(v);
}
template <class T>
RNNKIT_HD T from_acc(acc_t<T> v) {
  return T(v);
}
#if defined(__CUDACC__)
template <>
RNNKIT_HD float to_acc<__half>(__half v) {
  return __half2float(v);
}
template <>
RNNKIT_HD __half from_acc<__half>(float v) {
  return __float2half_rn(v);
}
template <>
RNNKIT_HD float to_acc<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
RNNKIT_HD __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
#endif
template <class T>
RNNKIT_HD T zero() {
  return from_acc<T>(acc_t<T>(0));
}

}  // namespace persistent
}  // namespace rnnkit
