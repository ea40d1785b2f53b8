#include "lstm_row_avx512.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

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
// The clamp only keeps k finite: scalef itself overflows to +inf and
// underflows to 0 as e^x does, so sigmoid(-inf) is 0 and 0 * inf is NaN as in torch.
RNNKIT_AVX512 inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(broadcast(-150.0f), x);
  x = _mm512_min_ps(broadcast(150.0f), x);
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

// 1 / (1 + e^-x): a 14-bit reciprocal estimate and one Newton step (28
// bits). Where the denominator is +inf the Newton step would compute 0 * inf:
// the result is set to 0 there, so sigmoid(-inf) is exactly 0 (a NaN is
// unordered, so it passes).
RNNKIT_AVX512 inline __m512 sigmoid16(__m512 x) {
  const __m512 d = _mm512_add_ps(broadcast(1.0f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), x)));
  const __mmask16 finite = _mm512_cmp_ps_mask(d, broadcast(INFINITY), _CMP_NEQ_UQ);
  const __m512 r = _mm512_rcp14_ps(d);
  return _mm512_maskz_mov_ps(finite, _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, broadcast(2.0f))));
}

// tanh(x) = 2 sigmoid(2x) - 1, as cells.h.
RNNKIT_AVX512 inline __m512 tanh16(__m512 x) {
  return _mm512_fmsub_ps(broadcast(2.0f), sigmoid16(_mm512_add_ps(x, x)), broadcast(1.0f));
}

// A gate's pre-activation, summed in cell_units.h's order: gx + gh + b.
RNNKIT_AVX512 inline __m512 pre_activation(__mmask16 m, const float* gx, const float* gh,
                                           const float* b) {
  return _mm512_add_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(m, gx), _mm512_maskz_loadu_ps(m, gh)),
                       _mm512_maskz_loadu_ps(m, b));
}

template <bool Save, bool Project>
RNNKIT_AVX512 void lstm_units(ForwardRow<float> r, int64_t n) {
  const int64_t H = r.H, X = r.gx_gate, S = r.gh_gate;
  const float *gx = r.gx, *gh = r.gh, *b = r.bias;
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
    const __m512 i = sigmoid16(pre_activation(m, gx + j, gh + j, b + j));
    const __m512 f = sigmoid16(pre_activation(m, gx + X + j, gh + S + j, b + H + j));
    const __m512 g = tanh16(pre_activation(m, gx + 2 * X + j, gh + 2 * S + j, b + 2 * H + j));
    const __m512 o = sigmoid16(pre_activation(m, gx + 3 * X + j, gh + 3 * S + j, b + 3 * H + j));
    const __m512 c_new = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(m, r.c_prev + j), _mm512_mul_ps(i, g));
    const __m512 h = _mm512_mul_ps(o, tanh16(c_new));
    _mm512_mask_storeu_ps(r.c + j, m, c_new);
    _mm512_mask_storeu_ps(r.h + j, m, h);  // with a projection this is r, the GEMM's input
    if (!Project) _mm512_mask_storeu_ps(r.y + j, m, h);
    if (Save) {
      float* saved = r.saved;
      _mm512_mask_storeu_ps(saved + j, m, i);
      _mm512_mask_storeu_ps(saved + H + j, m, f);
      _mm512_mask_storeu_ps(saved + 2 * H + j, m, g);
      _mm512_mask_storeu_ps(saved + 3 * H + j, m, o);
      _mm512_mask_storeu_ps(saved + 4 * H + j, m, c_new);
      if (!Project) _mm512_mask_storeu_ps(saved + 5 * H + j, m, h);
    }
  }
}

bool have_avx512() {
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
  }();
  return supported;
}

}  // namespace
#endif

LstmForwardUnits lstm_forward_units_avx512(bool save, bool project) {
#ifdef RNNKIT_HAVE_AVX512_ROW
  if (!have_avx512()) return nullptr;
  if (save) return project ? lstm_units<true, true> : lstm_units<true, false>;
  return project ? lstm_units<false, true> : lstm_units<false, false>;
#else
  (void)save;
  (void)project;
  return nullptr;
#endif
}

double lstm_forward_units_avx512_max_error(int64_t n, uint32_t seed) {
  const LstmForwardUnits fast = lstm_forward_units_avx512(true, false);
  if (!fast) return -1;
  // Pre-activations over [-12, 12] (past both saturations), c over [-3, 3].
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> pre(-12.0f, 12.0f), state(-3.0f, 3.0f);
  const int64_t H = n, W = saved_width(CellKind::LSTM, H, H);
  std::vector<float> gx(4 * H), gh(4 * H), bias(4 * H), c(H);
  for (auto* v : {&gx, &gh, &bias}) for (float& e : *v) e = pre(gen) / 3;
  for (float& e : c) e = state(gen);
  struct Out { std::vector<float> c, h, y, saved; };
  auto run = [&](auto&& units) {
    Out o{c, std::vector<float>(H), std::vector<float>(H), std::vector<float>(W)};
    units(ForwardRow<float>{gx.data(), gh.data(), bias.data(), nullptr, o.c.data(), o.c.data(),
                            o.h.data(), o.y.data(), o.saved.data(), H, H, H});
    return o;
  };
  const Out want = run([&](ForwardRow<float> r) {
    for (int64_t j = 0; j < n; ++j) forward_unit<float, CellKind::LSTM, true, false>(r, j);
  });
  const Out got = run([&](ForwardRow<float> r) { fast(r, n); });
  double worst = 0;
  auto compare = [&](const std::vector<float>& a, const std::vector<float>& b) {
    for (size_t k = 0; k < a.size(); ++k) worst = std::max(worst, double(std::fabs(a[k] - b[k])));
  };
  compare(want.c, got.c);
  compare(want.h, got.h);
  compare(want.y, got.y);
  compare(want.saved, got.saved);
  return worst;
}

}  // namespace rnnkit
