#include "lstm_row_avx512.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define RNNKIT_HAVE_AVX512_ROW 1
#define RNNKIT_AVX512 __attribute__((target("avx512f")))
#endif

namespace rnnkit {

#ifdef RNNKIT_HAVE_AVX512_ROW
namespace {

RNNKIT_AVX512 inline __m512 broadcast(float v) { return _mm512_set1_ps(v); }

// e^x: x = k ln2 + r (Cody-Waite), e^r by its Taylor polynomial to r^7
// (relative error about 1 ulp for |r| <= ln2/2), then scaled by 2^k.
// max/min return their second operand when either one is NaN, so NaN passes.
RNNKIT_AVX512 inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(broadcast(-87.0f), x);
  x = _mm512_min_ps(broadcast(88.0f), x);
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, broadcast(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, broadcast(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(k, broadcast(1.428606765330187045e-06f), r);
  __m512 p = broadcast(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, broadcast(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, broadcast(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, broadcast(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, broadcast(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, broadcast(0.5f));
  p = _mm512_fmadd_ps(p, r, broadcast(1.0f));
  p = _mm512_fmadd_ps(p, r, broadcast(1.0f));
  return _mm512_scalef_ps(p, k);
}

// 1 / (1 + e^-x): a 14-bit reciprocal estimate and one Newton step (28 bits).
RNNKIT_AVX512 inline __m512 sigmoid16(__m512 x) {
  const __m512 d = _mm512_add_ps(broadcast(1.0f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), x)));
  const __m512 r = _mm512_rcp14_ps(d);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, broadcast(2.0f)));
}

// tanh(x) = 2 sigmoid(2x) - 1, as cells.h.
RNNKIT_AVX512 inline __m512 tanh16(__m512 x) {
  return _mm512_fmsub_ps(broadcast(2.0f), sigmoid16(_mm512_add_ps(x, x)), broadcast(1.0f));
}

// A gate's pre-activation, summed in cells.h's order: gx + gh + b.
RNNKIT_AVX512 inline __m512 pre_activation(__mmask16 m, const float* gx, const float* gh,
                                           const float* b) {
  return _mm512_add_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(m, gx), _mm512_maskz_loadu_ps(m, gh)),
                       _mm512_maskz_loadu_ps(m, b));
}

template <bool Save, bool Project>
RNNKIT_AVX512 void lstm_row(int64_t n, int64_t H, int64_t X, int64_t S, const float* gx, const float* gh,
                            const float* b_hh, float* c, float* h_next, float* y, float* saved) {
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
    const __m512 i = sigmoid16(pre_activation(m, gx + j, gh + j, b_hh + j));
    const __m512 f = sigmoid16(pre_activation(m, gx + X + j, gh + S + j, b_hh + H + j));
    const __m512 g = tanh16(pre_activation(m, gx + 2 * X + j, gh + 2 * S + j, b_hh + 2 * H + j));
    const __m512 o = sigmoid16(pre_activation(m, gx + 3 * X + j, gh + 3 * S + j, b_hh + 3 * H + j));
    const __m512 c_new = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(m, c + j), _mm512_mul_ps(i, g));
    const __m512 h = _mm512_mul_ps(o, tanh16(c_new));
    _mm512_mask_storeu_ps(c + j, m, c_new);
    _mm512_mask_storeu_ps(h_next + j, m, h);  // with a projection this is r, the GEMM's input
    if (!Project) _mm512_mask_storeu_ps(y + j, m, h);
    if (Save) {
      _mm512_mask_storeu_ps(saved + j, m, i);
      _mm512_mask_storeu_ps(saved + H + j, m, f);
      _mm512_mask_storeu_ps(saved + 2 * H + j, m, g);
      _mm512_mask_storeu_ps(saved + 3 * H + j, m, o);
      _mm512_mask_storeu_ps(saved + 4 * H + j, m, c_new);
    }
  }
}

}  // namespace
#endif

LstmForwardRowF32 lstm_forward_row_avx512(bool save, bool project) {
#ifdef RNNKIT_HAVE_AVX512_ROW
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
  }();
  if (!supported) return nullptr;
  if (save) return project ? lstm_row<true, true> : lstm_row<true, false>;
  return project ? lstm_row<false, true> : lstm_row<false, false>;
#else
  (void)save;
  (void)project;
  return nullptr;
#endif
}

}  // namespace rnnkit
