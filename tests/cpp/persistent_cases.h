// The cases of the persistent kernels' tests, shared by the CPU test
// (persistent_test.cpp: the block backends of cpu_backend.h) and the GPU test
// (persistent_gpu_test.cu: the CUDA entry points): one layer's forward and
// backward with random inputs, run through a launcher, checked against the
// float64 reference (persistent_reference.h) on the same rounded inputs.
// Outputs start poisoned (0xFF bytes: NaN), so an element never written fails.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "../../csrc/persistent/args.h"
#include "../../csrc/persistent/geometry.h"
#include "persistent_reference.h"

namespace ptest {

using namespace rnnkit;
using namespace rnnkit::persistent;

// bfloat16 storage on the host: round to nearest even, compute in float.
// (Host and device, so the GPU test can name it in templates; it only runs on the host.)
struct HostBf16 {
  uint16_t bits;
  HostBf16() = default;
  RNNKIT_HD HostBf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) bits = 0x7fc0;  // NaN
    else bits = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  RNNKIT_HD explicit operator float() const {
    const uint32_t u = uint32_t(bits) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
};

template <class T> double as_double(T v) { return static_cast<double>(to_acc(v)); }
template <class T> T from_double(double v) { return from_acc<T>(static_cast<acc_t<T>>(v)); }

template <class T> DType dtype_of();
template <> inline DType dtype_of<double>() { return DType::F64; }
template <> inline DType dtype_of<float>() { return DType::F32; }
template <> inline DType dtype_of<HostBf16>() { return DType::BF16; }
#if defined(__CUDACC__)
template <> inline DType dtype_of<__half>() { return DType::F16; }
#endif

inline int g_failures = 0, g_checks = 0;
inline bool g_expect_failures = false;  // a fault was injected: failures are the point, not news
inline void fail(const std::string& what) {
  ++g_failures;
  if (!g_expect_failures) std::printf("FAIL %s\n", what.c_str());
}
#define EXPECT(cond, ...)                                   \
  do {                                                      \
    ++g_checks;                                             \
    if (!(cond)) {                                          \
      char msg_[512];                                       \
      std::snprintf(msg_, sizeof(msg_), __VA_ARGS__);       \
      fail(msg_);                                           \
    }                                                       \
  } while (0)

// ---- one layer, kernel against reference ------------------------------------------------

struct Case {
  CellKind cell = CellKind::LSTM;
  int64_t T = 3, B = 2, H = 5;
  int dirs = 1;
  bool reverse = false, lengths = false, bias = true, dy = true, grad_hn = true, training = true;
  MathKind math = MathKind::FFMA;
  GroupKind group = GroupKind::BLOCK;
  int32_t blocks = 1;
  int64_t rows = 2;
  int32_t threads = 64;
  int64_t chunk = 0;
  uint64_t seed = 1;

  std::string name(const char* type) const {
    static const char* cells[] = {"LSTM", "GRU", "RNN_TANH", "RNN_RELU"};
    char s[320];
    std::snprintf(s, sizeof(s),
                  "%s %s/%s %s blocks=%d rows=%lld thr=%d chunk=%lld T=%lld B=%lld H=%lld dirs=%d%s%s%s%s%s%s seed=%llu",
                  cells[int(cell)], type, math_name(math), group_name(group), blocks, (long long)rows,
                  threads, (long long)chunk, (long long)T, (long long)B, (long long)H, dirs,
                  reverse ? " reverse" : "", lengths ? " lengths" : "", bias ? "" : " nobias",
                  dy ? "" : " nody", grad_hn ? "" : " nograd_hn", training ? "" : " inference",
                  (unsigned long long)seed);
    return s;
  }
};

// Tolerance (normwise relative error) of each arithmetic.
template <class T>
double tolerance(MathKind m) {
  if (std::is_same<T, double>::value) return 1e-11;
  if (sizeof(T) == 2) return 5e-2;  // bfloat16 and float16 storage
  return m == MathKind::TF32 ? 1e-2 : 3e-5;
}

// Every host buffer of a case, so that a launcher can mirror them on a device.
struct Buffers {
  std::vector<std::pair<void*, size_t>> list;
  template <class V>
  V& add(V& v) {
    list.emplace_back(static_cast<void*>(v.data()), v.size() * sizeof(v[0]));
    return v;
  }
};

template <class T>
std::vector<T> rounded(std::vector<double>& v) {  // to T, and the reference sees the rounded values
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    out[i] = from_double<T>(v[i]);
    v[i] = as_double(out[i]);
  }
  return out;
}

template <class T>
std::vector<T> poisoned(size_t n) {
  std::vector<T> v(n);
  if (n) std::memset(static_cast<void*>(v.data()), 0xFF, n * sizeof(T));
  return v;
}

// Compares got (with a row stride and offset, so one half of a bidirectional
// output can be read) against ref (T, B, width); `past_end` marks positions
// that must be exactly zero.
struct Checker {
  const Case& c;
  const std::string& label;
  double tol;
  double worst = 0;
  bool ok = true;

  template <class T>
  void compare(const char* what, const std::vector<T>& got, int64_t stride, int64_t offset,
               const std::vector<double>& want, int64_t width,
               const std::function<bool(int64_t)>& past_end = nullptr) {
    const int64_t rows = width ? int64_t(want.size()) / width : 0;
    double diff = 0, norm = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < width; ++j) {
        const double g = as_double(got[r * stride + offset + j]), w = want[r * width + j];
        if (std::isnan(g)) {
          report(what, "unwritten or NaN element at row %lld col %lld", (long long)r, (long long)j);
          return;
        }
        if (past_end && past_end(r) && g != 0.0) {
          report(what, "nonzero %g past a row's end (row %lld col %lld)", g, (long long)r, (long long)j);
          return;
        }
        diff += (g - w) * (g - w);
        norm += w * w;
      }
    }
    // Relative to the reference's norm, or to 0.1 per value where values are
    // tiny (a vanished gradient: rounding noise there is no error).
    const double floor = 1e-2 * double(rows * width);
    const double err = std::sqrt(diff / (norm > floor ? norm : floor));
    worst = err > worst ? err : worst;
    if (!(err <= tol))
      report(what, "relative error %.3g > %.3g (|ref| %.3g over %lld values)", err, tol, std::sqrt(norm),
             (long long)(rows * width));
  }

  void report(const char* what, const char* fmt, ...) __attribute__((format(printf, 3, 4))) {
    ok = false;
    char msg[256];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(msg, sizeof(msg), fmt, args);
    va_end(args);
    fail(label + " [" + what + "] " + msg);
  }
};

struct Result {
  bool ok = true;
  Status fwd_status, bwd_status;
  std::vector<unsigned char> bytes;  // every output, for bit-identity checks
};

template <class T>
void append_bytes(std::vector<unsigned char>& out, const std::vector<T>& v) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(v.data());
  out.insert(out.end(), p, p + v.size() * sizeof(T));
}

// Runs a case's forward and backward through `launch` (an object with
// forward(geometry, args, buffers) and backward(...) returning Status) and
// checks them against the float64 reference.
template <class T, MathKind M, class Launcher>
Result run_case(const Case& c, Launcher& launch, bool report = true) {
  using Vec = std::vector<double>;
  const std::string label = c.name(dtype_name(dtype_of<T>()));
  const int64_t T_ = c.T, B = c.B, H = c.H, G = gate_count(c.cell) * H;
  const int64_t W = saved_count(c.cell) * H;
  const bool lstm = c.cell == CellKind::LSTM, gru = c.cell == CellKind::GRU;
  std::mt19937_64 rng(c.seed);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  auto random = [&](int64_t n, double scale) {
    Vec v(n);
    for (double& x : v) x = unit(rng) * scale;
    return v;
  };

  ref::Layer layer{c.cell, T_, B, H, {}};
  std::vector<int64_t> lengths;
  if (c.lengths) {
    for (int64_t b = 0; b < B; ++b) lengths.push_back(std::uniform_int_distribution<int64_t>(0, T_)(rng));
    layer.lengths = lengths;
  }

  // Inputs in T (and the reference on the same rounded values).
  struct Dir {
    ref::Direction ref;
    std::vector<T> gx, w, b, h0, c0, dy, ghn, gcn, saved_in, hseq_in;
  };
  std::vector<Dir> dirs(c.dirs);
  const double w_scale = 1.5 / std::sqrt(double(H));
  for (int d = 0; d < c.dirs; ++d) {
    Dir& D = dirs[d];
    D.ref.reverse = c.reverse != (d == 1);
    D.ref.gx = random(T_ * B * G, 1.0);
    D.ref.w_hh = random(G * H, w_scale);
    if (c.bias) D.ref.b_hh = random(G, 0.5);
    D.ref.h0 = random(B * H, 1.0);
    D.ref.c0 = random(B * H, 1.0);
    if (c.dy) D.ref.dy = random(T_ * B * H, 1.0);
    if (c.grad_hn) D.ref.grad_hn = random(B * H, 1.0);
    if (c.grad_hn && lstm) D.ref.grad_cn = random(B * H, 1.0);
    D.gx = rounded<T>(D.ref.gx);
    D.w = rounded<T>(D.ref.w_hh);
    D.b = rounded<T>(D.ref.b_hh);
    D.h0 = rounded<T>(D.ref.h0);
    D.c0 = rounded<T>(D.ref.c0);
    D.dy = rounded<T>(D.ref.dy);
    D.ghn = rounded<T>(D.ref.grad_hn);
    D.gcn = rounded<T>(D.ref.grad_cn);
    layer.forward(D.ref);
    // Backward reads what a forward saved: the reference's, rounded to T.
    D.saved_in = rounded<T>(D.ref.saved);
    D.hseq_in = rounded<T>(D.ref.h_seq);
    layer.backward(D.ref);
  }
  Buffers inputs;  // what every launch reads
  inputs.add(lengths);
  for (Dir& D : dirs)
    for (std::vector<T>* v : {&D.gx, &D.w, &D.b, &D.h0, &D.c0, &D.dy, &D.ghn, &D.gcn, &D.saved_in, &D.hseq_in})
      inputs.add(*v);
  auto past_end = [&](int64_t r) {  // r indexes (t, b) rows of a time-ordered buffer
    const int64_t t = r / B, b = r % B;
    return t >= layer.length(b);
  };

  Result result;
  Checker check{c, label, tolerance<T>(M)};
  const Choice choice{c.group, c.rows, c.blocks, c.threads, c.chunk};

  // Forward: one (T, B, dirs*H) output shared by the directions, as a
  // bidirectional layer's y is.
  {
    ForwardArgs a{};
    a.cell = c.cell;
    a.dtype = dtype_of<T>();
    a.T = T_, a.B = B, a.H = H;
    a.lengths = c.lengths ? lengths.data() : nullptr;
    a.dirs = c.dirs;
    std::vector<T> y = poisoned<T>(T_ * B * H * c.dirs);
    std::vector<std::vector<T>> h_n(c.dirs), c_n(c.dirs), saved(c.dirs), h_saved(c.dirs);
    for (int d = 0; d < c.dirs; ++d) {
      Dir& D = dirs[d];
      h_n[d] = poisoned<T>(B * H);
      c_n[d] = poisoned<T>(lstm ? B * H : 0);
      saved[d] = poisoned<T>(c.training ? T_ * B * W : 0);
      h_saved[d] = poisoned<T>(c.training ? T_ * B * H : 0);
      ForwardDirection& f = a.dir[d];
      f.gx = D.gx.data();
      f.w_hh = D.w.data();
      f.b_hh = c.bias ? D.b.data() : nullptr;
      f.h0 = D.h0.data();
      f.c0 = lstm ? D.c0.data() : nullptr;
      f.y = y.data() + d * H;
      f.y_stride = c.dirs * H;
      f.h_n = h_n[d].data();
      f.c_n = lstm ? c_n[d].data() : nullptr;
      f.saved = c.training && W ? saved[d].data() : nullptr;
      f.saved_stride = W;
      f.h_saved = c.training ? h_saved[d].data() : nullptr;
      f.h_saved_stride = H;
      f.reverse = D.ref.reverse;
    }
    Buffers buffers = inputs;
    buffers.add(y);
    for (int d = 0; d < c.dirs; ++d)
      for (std::vector<T>* v : {&h_n[d], &c_n[d], &saved[d], &h_saved[d]}) buffers.add(*v);
    const Geometry g = make_geometry(c.cell, dtype_of<T>(), M, Pass::FORWARD, B, H, c.dirs, choice);
    result.fwd_status = launch.template forward<T, M>(g, a, buffers);
    if (!result.fwd_status.ok()) {
      if (report) check.report("forward", "%s", result.fwd_status.message);
      result.ok = false;
      return result;
    }
    if (report) {
      for (int d = 0; d < c.dirs; ++d) {
        const ref::Direction& R = dirs[d].ref;
        check.compare("y", y, c.dirs * H, d * H, R.y, H, past_end);
        check.compare("h_n", h_n[d], H, 0, R.h_n, H);
        if (lstm) check.compare("c_n", c_n[d], H, 0, R.c_n, H);
        if (c.training && W) check.compare("saved", saved[d], W, 0, R.saved, W, past_end);
        if (c.training) check.compare("h_saved", h_saved[d], H, 0, R.h_seq, H, past_end);
      }
    }
    append_bytes(result.bytes, y);
    for (int d = 0; d < c.dirs; ++d) {
      append_bytes(result.bytes, h_n[d]);
      append_bytes(result.bytes, c_n[d]);
      append_bytes(result.bytes, saved[d]);
    }
  }

  // Backward, from the reference forward's saved values.
  {
    BackwardArgs a{};
    a.cell = c.cell;
    a.dtype = dtype_of<T>();
    a.T = T_, a.B = B, a.H = H;
    a.lengths = c.lengths ? lengths.data() : nullptr;
    a.dirs = c.dirs;
    std::vector<std::vector<T>> dgx(c.dirs), dgh(c.dirs), dh0(c.dirs), dc0(c.dirs);
    for (int d = 0; d < c.dirs; ++d) {
      Dir& D = dirs[d];
      dgx[d] = poisoned<T>(T_ * B * G);
      dgh[d] = poisoned<T>(T_ * B * G);
      dh0[d] = poisoned<T>(B * H);
      dc0[d] = poisoned<T>(lstm ? B * H : 0);
      BackwardDirection& b = a.dir[d];
      b.w_hh = D.w.data();
      b.dy = c.dy ? D.dy.data() : nullptr;
      b.dy_stride = H;
      b.grad_hn = c.grad_hn ? D.ghn.data() : nullptr;
      b.grad_cn = c.grad_hn && lstm ? D.gcn.data() : nullptr;
      b.h0 = D.h0.data();
      b.c0 = lstm ? D.c0.data() : nullptr;
      b.saved = W ? D.saved_in.data() : nullptr;
      b.saved_stride = W;
      b.h_seq = D.hseq_in.data();
      b.h_seq_stride = H;
      b.dgx = dgx[d].data();
      b.dgh = dgh[d].data();
      b.dh0 = dh0[d].data();
      b.dc0 = lstm ? dc0[d].data() : nullptr;
      b.reverse = D.ref.reverse;
    }
    Buffers buffers = inputs;
    for (int d = 0; d < c.dirs; ++d)
      for (std::vector<T>* v : {&dgx[d], &dgh[d], &dh0[d], &dc0[d]}) buffers.add(*v);
    const Geometry g = make_geometry(c.cell, dtype_of<T>(), M, Pass::BACKWARD, B, H, c.dirs, choice);
    result.bwd_status = launch.template backward<T, M>(g, a, buffers);
    if (!result.bwd_status.ok()) {
      if (report) check.report("backward", "%s", result.bwd_status.message);
      result.ok = false;
      return result;
    }
    if (report) {
      for (int d = 0; d < c.dirs; ++d) {
        const ref::Direction& R = dirs[d].ref;
        check.compare("dgx", dgx[d], G, 0, R.dgx, G, past_end);
        check.compare("dgh", dgh[d], G, 0, R.dgh, G, past_end);
        check.compare("dh0", dh0[d], H, 0, R.dh0, H);
        if (lstm) check.compare("dc0", dc0[d], H, 0, R.dc0, H);
      }
    }
    for (int d = 0; d < c.dirs; ++d) {
      append_bytes(result.bytes, dgx[d]);
      append_bytes(result.bytes, dgh[d]);
      append_bytes(result.bytes, dh0[d]);
      append_bytes(result.bytes, dc0[d]);
    }
    (void)gru;
  }
  ++g_checks;
  result.ok = result.ok && check.ok;
  return result;
}

// The element type and arithmetic of a case: float64 and float32 FFMA,
// float32 TF32, bfloat16 MMA16 (on the CPU: the same tiles, emulated).
enum class Flavor { F64, F32, TF32, BF16, F16 };

template <class Launcher>
Result run_flavor(Flavor f, Case c, Launcher& launch, bool report = true) {
  switch (f) {
    case Flavor::F64: c.math = MathKind::FFMA; return run_case<double, MathKind::FFMA>(c, launch, report);
    case Flavor::F32: c.math = MathKind::FFMA; return run_case<float, MathKind::FFMA>(c, launch, report);
    case Flavor::TF32: c.math = MathKind::TF32; return run_case<float, MathKind::TF32>(c, launch, report);
    case Flavor::BF16: c.math = MathKind::MMA16; return run_case<HostBf16, MathKind::MMA16>(c, launch, report);
    case Flavor::F16:
#if defined(__CUDACC__)
      c.math = MathKind::MMA16;
      return run_case<__half, MathKind::MMA16>(c, launch, report);
#else
      break;  // no float16 type on the host without CUDA
#endif
  }
  return {};
}

struct FlavoredCase {
  Flavor flavor;
  Case c;
};

// A case with random sizes and options; the group kind and flavor given.
inline Case random_case(std::mt19937_64& rng, CellKind cell, GroupKind group, Flavor flavor) {
  auto pick = [&](std::initializer_list<int64_t> v) {
    return *(v.begin() + std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng));
  };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  Case c;
  c.cell = cell;
  c.group = group;
  c.T = pick({1, 2, 5, 7});
  c.B = pick({1, 2, 3, 5});
  c.H = pick({1, 3, 8, 17, 33});
  c.dirs = chance(0.3) ? 2 : 1;
  c.reverse = chance(0.5);
  c.lengths = chance(0.6);
  c.bias = chance(0.8);
  c.dy = chance(0.8);
  c.grad_hn = chance(0.7);
  c.training = chance(0.85);
  c.rows = pick({c.B, (c.B + 1) / 2, 1});
  c.threads = static_cast<int32_t>(pick({32, 64, 128}));
  c.blocks = group == GroupKind::BLOCK ? 1 : static_cast<int32_t>(std::uniform_int_distribution<int64_t>(2, 5)(rng));
  const int64_t step = flavor == Flavor::BF16 || flavor == Flavor::F16 ? 16 : flavor == Flavor::TF32 ? 8 : 4;
  c.chunk = group == GroupKind::GRID ? pick({0, 1, 2, 3}) * step : 0;
  c.seed = rng();
  return c;
}

// Every cell x flavor x group kind once, then `extra` random ones.
inline std::vector<FlavoredCase> make_cases(uint64_t seed, int extra,
                                            const std::vector<Flavor>& flavors) {
  std::mt19937_64 rng(seed);
  std::vector<FlavoredCase> cases;
  const CellKind cells[] = {CellKind::LSTM, CellKind::GRU, CellKind::RNN_TANH, CellKind::RNN_RELU};
  const GroupKind groups[] = {GroupKind::BLOCK, GroupKind::CLUSTER, GroupKind::GRID};
  for (CellKind cell : cells)
    for (Flavor f : flavors)
      for (GroupKind g : groups) cases.push_back({f, random_case(rng, cell, g, f)});
  for (int i = 0; i < extra; ++i) {
    const Flavor f = flavors[rng() % flavors.size()];
    cases.push_back({f, random_case(rng, cells[rng() % 4], groups[rng() % 3], f)});
  }
  return cases;
}

// ---- the test programs' command line ------------------------------------------------------

struct Options {
  int cases = -1;      // random cases on top of the fixed ones (-1: the suite's default)
  uint64_t seed = 0;   // 0: a fresh seed, printed
  double yield = 0.05; // threaded CPU backend: chance of a yield
};

inline uint64_t fresh_seed(const Options& o) {
  if (o.seed) return o.seed;
  return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) | 1;
}

using Suite = std::pair<const char*, void (*)(const Options&)>;

// PROGRAM SUITE [--cases N] [--seed S] [--yield P]: runs one suite, or "all"
// (every suite but `not_in_all`), prints a summary; 1 if anything failed.
inline int run_suites(int argc, char** argv, const std::vector<Suite>& suites,
                      const std::vector<std::string>& not_in_all) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s SUITE [--cases N] [--seed S] [--yield P]\n", argv[0]);
    return 2;
  }
  const std::string suite = argv[1];
  Options o;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--cases") o.cases = std::atoi(argv[i + 1]);
    else if (flag == "--seed") o.seed = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--yield") o.yield = std::atof(argv[i + 1]);
  }
  const auto t0 = std::chrono::steady_clock::now();
  bool found = false;
  for (const Suite& s : suites) {
    const bool in_all = suite == "all" && std::find(not_in_all.begin(), not_in_all.end(), s.first) == not_in_all.end();
    if (suite == s.first || in_all) {
      found = true;
      s.second(o);
    }
  }
  if (!found) {
    std::fprintf(stderr, "unknown suite %s\n", suite.c_str());
    return 2;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s: %d checks, %d failures, %.1f s\n", suite.c_str(), g_checks, g_failures, secs);
  return g_failures ? 1 : 0;
}

}  // namespace ptest
