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

}  // namespace mkl
}  // namespace rnnkit
