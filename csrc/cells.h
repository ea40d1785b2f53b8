// The pointwise math of every cell kind, forward and backward, written once
// for the CPU and CUDA kernels. Each function works on one hidden unit of one
// row: the drivers own memory layout and loops, these own the arithmetic.
//
// A is the arithmetic type (float for float/half/bfloat16 storage, double for
// double). Pre-activations arrive with both biases already added, except GRU's
// n gate, where torch.nn computes tanh(x_n + r * (W_hn h + b_hn)).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define RNNKIT_HD __host__ __device__ __forceinline__
#else
#define RNNKIT_HD inline __attribute__((always_inline))
#endif

namespace rnnkit {

enum class CellKind : int { LSTM = 0, GRU = 1, RNN_TANH = 2, RNN_RELU = 3 };

// Gate rows per hidden unit in W_ih / W_hh: LSTM i,f,g,o; GRU r,z,n; RNN one.
RNNKIT_HD int gate_count(CellKind kind) {
  return kind == CellKind::LSTM ? 4 : kind == CellKind::GRU ? 3 : 1;
}

// Values per hidden unit that training keeps for backward (see sequence.cpp):
// LSTM i,f,g,o and c; GRU r,z,n and W_hn h + b_hn; RNN nothing (h is the output).
RNNKIT_HD int saved_count(CellKind kind) {
  return kind == CellKind::LSTM ? 5 : kind == CellKind::GRU ? 4 : 0;
}

namespace math {

#if !defined(__CUDA_ARCH__)
// Bit reinterpretation that GCC still vectorises inside a loop.
RNNKIT_HD float bits_to_float(int32_t i) { union { int32_t i; float f; } u{i}; return u.f; }
RNNKIT_HD int32_t float_to_bits(float f) { union { float f; int32_t i; } u{f}; return u.i; }
RNNKIT_HD double bits_to_double(int64_t i) { union { int64_t i; double d; } u{i}; return u.d; }
RNNKIT_HD int64_t double_to_bits(double d) { union { double d; int64_t i; } u{d}; return u.i; }

// NaN in, NaN out, decided on the bits: the CPU kernels are built with
// finite-math-only (see cpu/step_cpu.cpp), under which the compiler may turn
// the clamps below into min/max that drop a NaN, and would fold a float test.
RNNKIT_HD bool is_nan(float v) { return (float_to_bits(v) & 0x7fffffff) > 0x7f800000; }
RNNKIT_HD bool is_nan(double v) {
  return (double_to_bits(v) & 0x7fffffffffffffffLL) > 0x7ff0000000000000LL;
}
RNNKIT_HD float keep_nan(float input, float result) { return is_nan(input) ? input : result; }
RNNKIT_HD double keep_nan(double input, double result) { return is_nan(input) ? input : result; }
#endif

// exp without a libm call on the host, so that a loop over a row of hidden
// units becomes SIMD code: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite split),
// e^r from its Taylor polynomial, 2^k built in the exponent bits. The
// "magic" add rounds x/ln2 to the nearest integer and leaves it in the low
// mantissa bits. Relative error about 1 ulp over the clamped range.
RNNKIT_HD float exp_(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  const float input = x;
  // Clamped so that 2^k below stays a normal float; past the top the result
  // is +inf (as expf), so that sigmoid(-inf) is 0 and NaN-producing
  // products such as 0 * inf come out as in torch.
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23
  float t = x * 1.44269504088896341f + magic;
  float k = t - magic;
  float r = x - k * 0.693145751953125f;
  r = r - k * 1.428606765330187045e-06f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float e = p * bits_to_float((float_to_bits(t) + 127) << 23);
  return keep_nan(input, input > 88.72284f ? bits_to_float(0x7f800000) : e);
#endif
}

RNNKIT_HD double exp_(double x) {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  const double input = x;
  // As the float version: clamped for 2^k, +inf past the top.
  x = x < -708.0 ? -708.0 : x;
  x = x > 709.0 ? 709.0 : x;
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  double t = x * 1.4426950408889634074 + magic;
  double k = t - magic;
  double r = x - k * 6.93147180369123816490e-01;
  r = r - k * 1.90821492927058770002e-10;
  // Taylor series of e^r to r^13: truncation below 1e-17 for |r| <= ln2/2.
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const double e = p * bits_to_double((double_to_bits(t) + 1023) << 52);
  return keep_nan(input, input > 709.782712893384 ? bits_to_double(0x7ff0000000000000LL) : e);
#endif
}

template <class A>
RNNKIT_HD A sigmoid(A x) {
  return A(1) / (A(1) + exp_(-x));
}

template <class A>
RNNKIT_HD A tanh_(A x) {
#if defined(__CUDA_ARCH__)
  return tanh(x);
#else
  // tanh(x) = 2 sigmoid(2x) - 1: absolute error stays at rounding level.
  return A(2) / (A(1) + exp_(A(-2) * x)) - A(1);
#endif
}

// relu that keeps NaN, as torch.relu does.
template <class A>
RNNKIT_HD A relu(A x) {
#if defined(__CUDA_ARCH__)
  return x < A(0) ? A(0) : x;
#else
  return math::keep_nan(x, x < A(0) ? A(0) : x);
#endif
}

}  // namespace math

// LSTM. Forward from the pre-activations of i, f, g, o and c_{t-1}: the
// activated gates, c_t, and o * tanh(c_t) (h_t, or the input of the projection).
template <class A>
RNNKIT_HD void lstm_forward(A pre_i, A pre_f, A pre_g, A pre_o, A c_prev,
                            A& i, A& f, A& g, A& o, A& c, A& h) {
  i = math::sigmoid(pre_i);
  f = math::sigmoid(pre_f);
  g = math::tanh_(pre_g);
  o = math::sigmoid(pre_o);
  c = f * c_prev + i * g;
  h = o * math::tanh_(c);
}

// LSTM backward. dh: gradient of o*tanh(c_t); dc: gradient of c_t from the
// step after. Gives the pre-activation gradients, dc_{t-1}, and o*tanh(c_t)
// again (the projection's weight gradient needs it).
template <class A>
RNNKIT_HD void lstm_backward(A dh, A dc, A i, A f, A g, A o, A c, A c_prev,
                             A& d_i, A& d_f, A& d_g, A& d_o, A& dc_prev, A& h) {
  A tanh_c = math::tanh_(c);
  A dc_total = dc + dh * o * (A(1) - tanh_c * tanh_c);
  d_o = dh * tanh_c * o * (A(1) - o);
  d_i = dc_total * g * i * (A(1) - i);
  d_f = dc_total * c_prev * f * (A(1) - f);
  d_g = dc_total * i * (A(1) - g * g);
  dc_prev = dc_total * f;
  h = o * tanh_c;
}

// GRU, torch.nn's form. x_*: input side with b_ih; h_*: hidden side with b_hh.
// hn (W_hn h + b_hn) is returned for backward.
template <class A>
RNNKIT_HD void gru_forward(A x_r, A x_z, A x_n, A h_r, A h_z, A h_n, A h_prev,
                           A& r, A& z, A& n, A& h) {
  r = math::sigmoid(x_r + h_r);
  z = math::sigmoid(x_z + h_z);
  n = math::tanh_(x_n + r * h_n);
  h = (A(1) - z) * n + z * h_prev;
}

// GRU backward. The input and hidden sides share the r and z gradients and
// differ for n: d(x_n) = dn_pre, d(h_n) = dn_pre * r. dh_prev_direct is the
// z * dh path; the W_hh path is added by the recurrent GEMM.
template <class A>
RNNKIT_HD void gru_backward(A dh, A r, A z, A n, A h_n, A h_prev,
                            A& d_r, A& d_z, A& dx_n, A& dh_n, A& dh_prev_direct) {
  A dn_pre = dh * (A(1) - z) * (A(1) - n * n);
  d_z = dh * (h_prev - n) * z * (A(1) - z);
  d_r = dn_pre * h_n * r * (A(1) - r);
  dx_n = dn_pre;
  dh_n = dn_pre * r;
  dh_prev_direct = dh * z;
}

// Elman RNN: h = act(pre); backward needs only h.
template <class A>
RNNKIT_HD A rnn_forward(CellKind kind, A pre) {
  return kind == CellKind::RNN_RELU ? math::relu(pre) : math::tanh_(pre);
}

// relu's gradient is cut where h <= 0 only: a NaN h lets dh through, as
// torch's threshold_backward does (decided on the bits on the host, where the
// CPU kernels are built with finite-math-only).
template <class A>
RNNKIT_HD A rnn_backward(CellKind kind, A dh, A h) {
  if (kind != CellKind::RNN_RELU) return dh * (A(1) - h * h);
#if defined(__CUDA_ARCH__)
  return h <= A(0) ? A(0) : dh;
#else
  return math::is_nan(h) || h > A(0) ? dh : A(0);
#endif
}

}  // namespace rnnkit
