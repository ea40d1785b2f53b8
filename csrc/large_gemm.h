// The driver's large GEMMs: the input projections of all steps, dx and the
// weight gradients, out = a · b over all T*B rows at once. A device may
// register a faster one than ATen's mm (the CPU: oneDNN's brgemm over tiles,
// where MKL's own GEMM runs its slower code, as on AMD CPUs); it may decline
// a call (float64, small sizes), and ATen's mm runs it then.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/DeviceType.h>

namespace rnnkit {

// a (M, K) and b (K, N): any 2-D views. Returns a new contiguous (M, N).
at::Tensor large_gemm(const at::Tensor& a, const at::Tensor& b);

// A device's GEMM: returns an undefined tensor to decline.
using DeviceGemm = at::Tensor (*)(const at::Tensor& a, const at::Tensor& b);
void register_large_gemm(c10::DeviceType device, DeviceGemm gemm);

}  // namespace rnnkit
