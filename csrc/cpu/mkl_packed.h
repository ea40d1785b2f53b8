// MKL's packed-GEMM entry points, exported by torch's CPU library on builds
// that carry MKL. Weak, so that rnnkit loads (and falls back to at::mm) on
// builds without them. A time loop multiplies by the same weight at every
// step: packed once, the weight is read in the order MKL's kernels want.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

extern "C" {
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha,
                      const float* src, int ld, float* dest) __attribute__((weak));
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a,
                         int lda, const float* b, int ldb, float beta, float* c, int ldc)
    __attribute__((weak));
// The C entry point (the lower-case names are the Fortran ones, taking int*).
int MKL_Set_Num_Threads_Local(int n) __attribute__((weak));
}

namespace rnnkit {
namespace mkl {

// CBLAS enum values (mkl_cblas.h).
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;

inline bool packing_available() {
  return cblas_sgemm_pack_get_size != nullptr && cblas_sgemm_pack != nullptr &&
         cblas_sgemm_compute != nullptr;
}

inline bool fits_int(int64_t v) { return v <= std::numeric_limits<int>::max(); }

// Floats that MKL's packed copy of a (k, n) right-hand matrix takes, for a
// GEMM with m rows.
inline int64_t packed_b_floats(int64_t m, int64_t n, int64_t k) {
  const size_t bytes = cblas_sgemm_pack_get_size(kBMatrix, static_cast<int>(m),
                                                 static_cast<int>(n), static_cast<int>(k));
  return static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float));
}

// Keeps MKL's GEMMs on the calling thread while in scope (when `active`),
// then gives back the thread count it had.
class OneThread {
 public:
  explicit OneThread(bool active = true)
      : active_(active && MKL_Set_Num_Threads_Local != nullptr),
        before_(active_ ? MKL_Set_Num_Threads_Local(1) : 0) {}
  ~OneThread() {
    if (active_) MKL_Set_Num_Threads_Local(before_);
  }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  const bool active_;
  const int before_;
};

}  // namespace mkl
}  // namespace rnnkit
