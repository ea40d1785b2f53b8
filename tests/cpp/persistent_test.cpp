// CPU checks of the persistent kernels (csrc/persistent/): the kernel bodies
// run on the sequential and the threaded block backends against a float64
// reference, the planner on three GPUs' properties, and the barrier protocol
// with faults injected. Torch-free; tests/test_persistent.py compiles and runs
// it (plain and under ThreadSanitizer).
//
//   persistent_test SUITE [--cases N] [--seed S] [--yield P]
//   suites: structure planner seq threads determinism broken-seq
//           broken-threads watchdog table all
// Prints one line per failure and a summary; exits 1 if anything failed.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../../csrc/persistent/backward_body.h"
#include "../../csrc/persistent/cpu_backend.h"
#include "../../csrc/persistent/forward_body.h"
#include "../../csrc/persistent/plan.h"
#include "persistent_reference.h"

using namespace rnnkit;
using namespace rnnkit::persistent;

namespace {

// bfloat16 storage on the host: round to nearest even, compute in float.
struct HostBf16 {
  uint16_t bits;
  HostBf16() = default;
  HostBf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) bits = 0x7fc0;  // NaN
    else bits = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  explicit operator float() const {
    const uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

template <class T> double as_double(T v) { return static_cast<double>(static_cast<float>(v)); }
template <> double as_double<double>(double v) { return v; }
template <class T> T from_double(double v) { return T(static_cast<float>(v)); }
template <> double from_double<double>(double v) { return v; }

template <class T> DType dtype_of();
template <> DType dtype_of<double>() { return DType::F64; }
template <> DType dtype_of<float>() { return DType::F32; }
template <> DType dtype_of<HostBf16>() { return DType::BF16; }

int g_failures = 0, g_checks = 0;
bool g_expect_failures = false;  // a fault was injected: failures are the point, not news
void fail(const std::string& what) {
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
  if (std::is_same<T, HostBf16>::value) return 5e-2;
  return m == MathKind::TF32 ? 1e-2 : 3e-5;
}

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

template <class T, MathKind M>
Result run_case(const Case& c, const CpuOptions& opt, bool report = true) {
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
    const Geometry g = make_geometry(c.cell, dtype_of<T>(), M, Pass::FORWARD, B, H, c.dirs, choice);
    result.fwd_status = run_on_cpu<ForwardBody<T, M>>(g, a, opt);
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
    const Geometry g = make_geometry(c.cell, dtype_of<T>(), M, Pass::BACKWARD, B, H, c.dirs, choice);
    result.bwd_status = run_on_cpu<BackwardBody<T, M>>(g, a, opt);
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
enum class Flavor { F64, F32, TF32, BF16 };
const Flavor kFlavors[] = {Flavor::F64, Flavor::F32, Flavor::TF32, Flavor::BF16};

Result run_flavor(Flavor f, Case c, const CpuOptions& opt, bool report = true) {
  switch (f) {
    case Flavor::F64: c.math = MathKind::FFMA; return run_case<double, MathKind::FFMA>(c, opt, report);
    case Flavor::F32: c.math = MathKind::FFMA; return run_case<float, MathKind::FFMA>(c, opt, report);
    case Flavor::TF32: c.math = MathKind::TF32; return run_case<float, MathKind::TF32>(c, opt, report);
    case Flavor::BF16: c.math = MathKind::MMA16; return run_case<HostBf16, MathKind::MMA16>(c, opt, report);
  }
  return {};
}

struct FlavoredCase {
  Flavor flavor;
  Case c;
};

// A case with random sizes and options; the group kind and flavor given.
Case random_case(std::mt19937_64& rng, CellKind cell, GroupKind group, Flavor flavor) {
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
  const int64_t step = flavor == Flavor::BF16 ? 16 : flavor == Flavor::TF32 ? 8 : 4;
  c.chunk = group == GroupKind::GRID ? pick({0, 1, 2, 3}) * step : 0;
  c.seed = rng();
  return c;
}

std::vector<FlavoredCase> make_cases(uint64_t seed, int extra) {
  std::mt19937_64 rng(seed);
  std::vector<FlavoredCase> cases;
  const CellKind cells[] = {CellKind::LSTM, CellKind::GRU, CellKind::RNN_TANH, CellKind::RNN_RELU};
  const GroupKind groups[] = {GroupKind::BLOCK, GroupKind::CLUSTER, GroupKind::GRID};
  for (CellKind cell : cells)  // every cell x flavor x group kind at least once
    for (Flavor f : kFlavors)
      for (GroupKind g : groups) cases.push_back({f, random_case(rng, cell, g, f)});
  for (int i = 0; i < extra; ++i) {
    const Flavor f = kFlavors[rng() % 4];
    cases.push_back({f, random_case(rng, cells[rng() % 4], groups[rng() % 3], f)});
  }
  return cases;
}

// ---- suites ---------------------------------------------------------------------------

struct Options {
  int cases = -1;
  uint64_t seed = 0;
  double yield = 0.05;
};

uint64_t fresh_seed(const Options& o) {
  if (o.seed) return o.seed;
  return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) | 1;
}

int run_cases(const std::vector<FlavoredCase>& cases, const CpuOptions& opt) {
  int passed = 0;
  for (const FlavoredCase& fc : cases) passed += run_flavor(fc.flavor, fc.c, opt).ok;
  return passed;
}

void suite_seq(const Options& o) {
  const uint64_t seed = fresh_seed(o);
  const auto cases = make_cases(seed, o.cases < 0 ? 250 : o.cases);
  CpuOptions opt;
  opt.seed = seed;
  std::printf("seq: %d/%zu cases passed (seed %llu)\n", run_cases(cases, opt), cases.size(),
              (unsigned long long)seed);
}

void suite_threads(const Options& o) {
  const uint64_t seed = fresh_seed(o);
  auto cases = make_cases(seed, 0);  // one of each cell x flavor x group kind
  if (o.cases >= 0 && size_t(o.cases) < cases.size()) cases.resize(o.cases);
  CpuOptions opt;
  opt.threaded = true;
  opt.seed = seed;
  opt.yield_probability = o.yield;
  std::printf("threads: %d/%zu cases passed (seed %llu, yield %.2f)\n", run_cases(cases, opt),
              cases.size(), (unsigned long long)seed, o.yield);
}

// Sequential (random block order) and threaded runs give the same bits, and
// so do two threaded runs: fixed-order reductions, no dependence on timing.
void suite_determinism(const Options& o) {
  const uint64_t seed = fresh_seed(o);
  std::mt19937_64 rng(seed);
  int same = 0, total = 0;
  for (Flavor f : kFlavors) {
    for (GroupKind grp : {GroupKind::CLUSTER, GroupKind::GRID}) {
      Case c = random_case(rng, CellKind(rng() % 4), grp, f);
      c.blocks = 3;
      c.H = 17;
      c.T = 5;
      CpuOptions seq;
      seq.seed = rng();
      CpuOptions thr = seq;
      thr.threaded = true;
      thr.yield_probability = o.yield;
      const Result a = run_flavor(f, c, seq, false);
      const Result b = run_flavor(f, c, thr, false);
      thr.seed = rng();
      const Result d = run_flavor(f, c, thr, false);
      ++total;
      const bool ok = a.bytes == b.bytes && b.bytes == d.bytes && !a.bytes.empty();
      same += ok;
      EXPECT(ok, "determinism: outputs differ between runs: %s", c.name("?").c_str());
    }
  }
  std::printf("determinism: %d/%d cases bit-identical across sequential and threaded runs\n", same, total);
}

// A block that runs ahead of the barrier (sequential: one phase early) must
// give wrong numbers: the reference check sees a broken barrier.
void suite_broken_seq(const Options& o) {
  const uint64_t seed = fresh_seed(o);
  std::mt19937_64 rng(seed);
  int caught = 0, total = 0;
  for (CellKind cell : {CellKind::LSTM, CellKind::GRU, CellKind::RNN_TANH, CellKind::RNN_RELU}) {
    for (GroupKind grp : {GroupKind::CLUSTER, GroupKind::GRID}) {
      Case c = random_case(rng, cell, grp, Flavor::F64);
      c.blocks = 3, c.H = 9, c.T = 6, c.B = 2, c.rows = 2, c.lengths = false;
      CpuOptions opt;
      opt.skip_wait_block = 0;
      const int before = g_failures;
      g_expect_failures = true;
      const Result r = run_flavor(Flavor::F64, c, opt, true);
      g_expect_failures = false;
      g_failures = before;
      ++total;
      caught += !r.ok;
      EXPECT(!r.ok, "broken-seq: a block running ahead of the barrier went unnoticed: %s",
             c.name("f64").c_str());
    }
  }
  std::printf("broken-seq: %d/%d broken barriers caught by the reference check\n", caught, total);
}

// Threaded, one block never waits at the barrier. Under ThreadSanitizer this
// must report a data race; without it, the numbers are usually wrong.
void suite_broken_threads(const Options& o) {
  const uint64_t seed = fresh_seed(o);
  std::mt19937_64 rng(seed);
  int wrong = 0, total = 0;
  for (GroupKind grp : {GroupKind::CLUSTER, GroupKind::GRID}) {
    Case c = random_case(rng, CellKind::LSTM, grp, Flavor::F64);
    c.blocks = 3, c.H = 9, c.T = 6, c.B = 2, c.rows = 2, c.lengths = false;
    CpuOptions opt;
    opt.threaded = true;
    opt.skip_wait_block = 1;
    opt.yield_probability = o.yield;
    const int before = g_failures;
    g_expect_failures = true;
    const Result r = run_flavor(Flavor::F64, c, opt, true);
    g_expect_failures = false;
    g_failures = before;
    ++total;
    wrong += !r.ok;
  }
  std::printf("broken-threads: %d/%d runs gave wrong numbers (informational; TSan must report a race)\n",
              wrong, total);
}

// A block that never arrives: the others' watchdog must end the launch with
// an error instead of hanging.
void suite_watchdog(const Options& o) {
  for (GroupKind grp : {GroupKind::CLUSTER, GroupKind::GRID}) {
    std::mt19937_64 rng(fresh_seed(o));
    Case c = random_case(rng, CellKind::GRU, grp, Flavor::F32);
    c.blocks = 3, c.H = 9, c.T = 6;
    CpuOptions opt;
    opt.threaded = true;
    opt.stuck_block = 1;
    opt.stuck_epoch = 3;
    opt.watchdog_ms = 200;
    const auto t0 = std::chrono::steady_clock::now();
    const Result r = run_flavor(Flavor::F32, c, opt, false);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT(r.fwd_status.code == StatusCode::WATCHDOG, "watchdog: %s: a stuck block gave status %d (%s)",
           group_name(grp), int(r.fwd_status.code), r.fwd_status.message);
    EXPECT(std::strstr(r.fwd_status.message, "barrier 3") != nullptr,
           "watchdog: the message names the wrong barrier: %s", r.fwd_status.message);
    EXPECT(secs < 10, "watchdog: took %.1f s", secs);
    std::printf("watchdog: %s: '%s' after %.2f s\n", group_name(grp), r.fwd_status.message, secs);
  }
}

// Every row of W_hh in exactly one block (forward: gate g of the block's unit u
// at local row u*G + g; backward: the block's units as columns), every K index
// of X published by exactly one block, padding zero.
struct FakeBackend {
  int grp, rnk;
  unsigned char* sm;
  int group() const { return grp; }
  int rank() const { return rnk; }
  unsigned char* smem() { return sm; }
};

void suite_structure(const Options& o) {
  std::mt19937_64 rng(fresh_seed(o));
  int geometries = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const CellKind cell = CellKind(rng() % 4);
    const int64_t H = 1 + rng() % 40, B = 1 + rng() % 6;
    const int32_t blocks = 1 + static_cast<int32_t>(rng() % 6);
    const Pass pass = rng() % 2 ? Pass::FORWARD : Pass::BACKWARD;
    const MathKind math = MathKind(rng() % 3);
    const Choice choice{rng() % 2 ? GroupKind::GRID : GroupKind::CLUSTER, 1 + int64_t(rng() % B), blocks, 64, 0};
    const Geometry g = make_geometry(cell, DType::F64, math, pass, B, H, 1, choice);
    const int64_t G = g.G;
    // W_hh with values that name their place: 1 + row * H + column.
    std::vector<double> w(G * H * H);
    for (int64_t i = 0; i < int64_t(w.size()); ++i) w[i] = 1.0 + double(i);
    ForwardArgs fa{};
    fa.dir[0].w_hh = w.data();
    BackwardArgs ba{};
    ba.dir[0].w_hh = w.data();
    std::vector<int> seen(G * H * H, 0);
    std::vector<int> k_owner(g.Kp, 0);
    std::vector<unsigned char> dummy(16);
    bool ok = true;
    for (int rank = 0; rank < g.blocks; ++rank) {
      FakeBackend be{0, rank, dummy.data()};
      const BlockPlace p(g, 0, rank);
      for (int64_t k = p.k_begin; k < p.k_end; ++k) ++k_owner[k];
      for (int64_t m = 0; m < g.Mp; ++m) {
        for (int64_t k = 0; k < g.Kp; ++k) {
          const double v = pass == Pass::FORWARD ? ForwardBody<double, MathKind::FFMA>(g, fa, be).weight(m, k)
                                                 : BackwardBody<double, MathKind::FFMA>(g, ba, be).weight(m, k);
          if (v == 0) continue;
          const int64_t idx = int64_t(v) - 1, row = idx / H, col = idx % H;
          ++seen[idx];
          if (pass == Pass::FORWARD) {
            const int64_t u = m / G, gate = m % G;
            ok &= col == k && row == gate * H + p.j0 + u && u < p.units;
          } else {
            const int64_t q = k / g.pub, gate = (k % g.pub) / g.units, j2 = q * g.units + (k % g.pub) % g.units;
            ok &= col == p.j0 + m && row == gate * H + j2 && m < p.units;
          }
        }
      }
    }
    for (int count : seen) ok &= count == 1;
    for (int count : k_owner) ok &= count == 1;
    ++geometries;
    EXPECT(ok, "structure: cell %d pass %d H=%lld blocks=%d math %s: a W_hh element or K index is "
               "missing, doubled or misplaced", int(cell), int(pass), (long long)H, blocks, math_name(math));
  }
  // row_time: forward s, reverse len-1-s, finished past len.
  EXPECT(row_time(0, 3, false) == 0 && row_time(2, 3, false) == 2 && row_time(3, 3, false) == -1 &&
             row_time(0, 3, true) == 2 && row_time(2, 3, true) == 0 && row_time(0, 0, true) == -1,
         "structure: row_time disagrees with time_of in step.h");
  std::printf("structure: %d geometries: every W_hh element and K index owned exactly once\n", geometries);
}

// ---- planner ----------------------------------------------------------------------------

DeviceInfo h100() {  // H100 SXM5: 132 SMs, 227 KB of shared memory per block
  DeviceInfo d;
  d.cc_major = 9, d.cc_minor = 0, d.sm_count = 132;
  d.smem_per_block = 232448, d.smem_per_sm = 233472;
  d.regs_per_sm = 65536, d.max_threads_per_sm = 2048;
  d.cooperative_launch = true, d.max_cluster_blocks = 16;
  return d;
}
DeviceInfo h200() { return h100(); }  // the same chip: 132 SMs, the same limits
DeviceInfo l4() {  // sm89: 58 SMs, 99 KB per block (100 KB per SM), no clusters
  DeviceInfo d;
  d.cc_major = 8, d.cc_minor = 9, d.sm_count = 58;
  d.smem_per_block = 101376, d.smem_per_sm = 102400;
  d.regs_per_sm = 65536, d.max_threads_per_sm = 1536;
  d.cooperative_launch = true, d.max_cluster_blocks = 0;
  return d;
}
DeviceInfo t4() {  // sm75: below the planner's floor
  DeviceInfo d = l4();
  d.cc_major = 7, d.cc_minor = 5, d.sm_count = 40;
  return d;
}

Plan plan(const DeviceInfo& dev, CellKind cell, DType dtype, int64_t B, int64_t H, int dirs = 1,
          Pass pass = Pass::FORWARD, bool tf32 = false, bool proj = false) {
  return plan_layer({cell, dtype, tf32, B, H, dirs, proj, pass}, dev);
}

void expect_plan_sane(const Plan& p, const DeviceInfo& dev, const char* what) {
  if (!p.applies) return;
  const Geometry& g = p.geo;
  EXPECT(g.smem_bytes <= dev.smem_per_block, "planner %s: %lld bytes of shared memory > %lld", what,
         (long long)g.smem_bytes, (long long)dev.smem_per_block);
  EXPECT(g.grid_blocks() <= dev.sm_count, "planner %s: %lld blocks > %d SMs", what,
         (long long)g.grid_blocks(), dev.sm_count);
  EXPECT(g.group != GroupKind::CLUSTER || g.blocks <= dev.max_cluster_blocks,
         "planner %s: cluster of %d on a device that allows %d", what, g.blocks, dev.max_cluster_blocks);
  EXPECT((g.blocks - 1) * g.units < g.H, "planner %s: a block without units", what);
  EXPECT(g.rows * g.batch_groups >= g.B, "planner %s: rows not covered", what);
  EXPECT(g.group != GroupKind::GRID || dev.cooperative_launch, "planner %s: grid without cooperative launch", what);
}

void suite_planner(const Options&) {
  const CellKind cells[] = {CellKind::LSTM, CellKind::GRU, CellKind::RNN_TANH};
  const DType dtypes[] = {DType::F32, DType::BF16, DType::F16};
  struct Dev { const char* name; DeviceInfo info; } devs[] = {{"H100", h100()}, {"H200", h200()}, {"L4", l4()}};
  // Every plan respects the device; a fitting H means every smaller H fits.
  for (const Dev& d : devs) {
    for (CellKind cell : cells)
      for (DType dt : dtypes)
        for (int dirs : {1, 2})
          for (Pass pass : {Pass::FORWARD, Pass::BACKWARD})
            for (int64_t B : {1, 8, 64, 256}) {
              bool fitted_larger = false;
              for (int64_t H : {2048, 1024, 768, 512, 256, 128, 64, 17}) {
                const Plan p = plan(d.info, cell, dt, B, H, dirs, pass);
                char what[96];
                std::snprintf(what, sizeof(what), "%s cell %d %s B=%lld H=%lld dirs=%d pass %d", d.name,
                              int(cell), dtype_name(dt), (long long)B, (long long)H, dirs, int(pass));
                expect_plan_sane(p, d.info, what);
                EXPECT(p.applies || !fitted_larger, "planner %s: refused although a larger H fitted", what);
                EXPECT(p.applies || std::strstr(p.reason, "does not apply: ") == p.reason,
                       "planner %s: refusal without a reason: '%s'", what, p.reason);
                fitted_larger |= p.applies;
              }
            }
  }
  // Which group each shape gets.
  auto group_of = [](const Plan& p) { return p.applies ? int(p.geo.group) : -1; };
  for (const DeviceInfo& d : {h100(), h200()}) {
    EXPECT(group_of(plan(d, CellKind::RNN_TANH, DType::F32, 8, 64)) == int(GroupKind::BLOCK),
           "planner: RNN fp32 B=8 H=64 (16 KB of W_hh) should run in one block");
    const int small = group_of(plan(d, CellKind::LSTM, DType::BF16, 8, 128));
    EXPECT(small == int(GroupKind::BLOCK) || small == int(GroupKind::CLUSTER),
           "planner: LSTM bf16 B=8 H=128 (128 KB of W_hh) should run in a block or a cluster");
    EXPECT(group_of(plan(d, CellKind::LSTM, DType::F32, 64, 256)) == int(GroupKind::CLUSTER),
           "planner: LSTM fp32 B=64 H=256 (1 MB) should run on clusters");
    EXPECT(group_of(plan(d, CellKind::LSTM, DType::F32, 64, 512)) == int(GroupKind::GRID),
           "planner: LSTM fp32 B=64 H=512 (4 MB, more than 16 blocks hold) should run on the grid");
    EXPECT(group_of(plan(d, CellKind::LSTM, DType::BF16, 16, 768)) == int(GroupKind::GRID),
           "planner: LSTM bf16 B=16 H=768 (FlashRNN's anchor, 4.5 MB) should run on the grid");
    EXPECT(group_of(plan(d, CellKind::LSTM, DType::F32, 64, 512, 1, Pass::BACKWARD)) == int(GroupKind::GRID),
           "planner: LSTM fp32 B=64 H=512 backward should run on the grid");
    const Plan huge = plan(d, CellKind::LSTM, DType::F32, 64, 2048);
    EXPECT(!huge.applies && std::strstr(huge.reason, "does not fit on chip"),
           "planner: LSTM fp32 H=2048 (64 MB) must be refused as not fitting: '%s'", huge.reason);
    // Bidirectional: both directions share the SMs.
    EXPECT(plan(d, CellKind::LSTM, DType::BF16, 16, 1536, 1).applies &&
               !plan(d, CellKind::LSTM, DType::BF16, 16, 1536, 2).applies,
           "planner: LSTM bf16 H=1536 (18 MB of 29 MB) should fit for one direction and not for two");
    EXPECT(plan(d, CellKind::GRU, DType::F32, 32, 512, 2).applies &&
               plan(d, CellKind::GRU, DType::F32, 32, 512, 2).geo.dirs == 2,
           "planner: GRU fp32 H=512 should run both directions in one launch");
  }
  const DeviceInfo L4 = l4();
  for (CellKind cell : cells)
    for (int64_t H : {64, 128, 256, 512})
      for (int64_t B : {1, 16, 64}) {
        const Plan p = plan(L4, cell, DType::BF16, B, H);
        EXPECT(!p.applies || p.geo.group != GroupKind::CLUSTER, "planner: L4 has no clusters");
      }
  EXPECT(!plan(L4, CellKind::LSTM, DType::F32, 64, 1024).applies,
         "planner: LSTM fp32 H=1024 (16 MB) cannot fit the L4's 5.6 MB of shared memory");
  EXPECT(plan(L4, CellKind::LSTM, DType::BF16, 16, 256).applies, "planner: LSTM bf16 H=256 fits an L4");
  // Refusals with their reasons.
  const Plan f64 = plan(h100(), CellKind::LSTM, DType::F64, 8, 64);
  EXPECT(!f64.applies && std::strstr(f64.reason, "float64"), "planner: float64 reason: '%s'", f64.reason);
  const Plan proj = plan(h100(), CellKind::LSTM, DType::F32, 8, 64, 1, Pass::FORWARD, false, true);
  EXPECT(!proj.applies && std::strstr(proj.reason, "proj_size"), "planner: projection reason: '%s'", proj.reason);
  const Plan old = plan(t4(), CellKind::LSTM, DType::F16, 8, 64);
  EXPECT(!old.applies && std::strstr(old.reason, "7.5"), "planner: sm75 reason: '%s'", old.reason);
  DeviceInfo no_coop = h100();
  no_coop.cooperative_launch = false;
  const Plan nc = plan(no_coop, CellKind::LSTM, DType::F32, 64, 512);
  EXPECT(!nc.applies || nc.geo.group != GroupKind::GRID, "planner: grid without cooperative launch");
  // Math per dtype.
  EXPECT(plan(h100(), CellKind::GRU, DType::F32, 8, 128, 1, Pass::FORWARD, true).geo.math == MathKind::TF32 &&
             plan(h100(), CellKind::GRU, DType::F32, 8, 128).geo.math == MathKind::FFMA &&
             plan(h100(), CellKind::GRU, DType::F16, 8, 128).geo.math == MathKind::MMA16,
         "planner: fp32 strict -> FFMA, allow_tf32 -> TF32, 16-bit -> MMA16");
  std::printf("planner: checked\n");
}

// The plans for the benchmark's shapes, as a table (for the docs).
void suite_table(const Options&) {
  const char* cells[] = {"LSTM", "GRU", "RNN_TANH"};
  struct Dev { const char* name; DeviceInfo info; } devs[] = {{"H100/H200", h100()}, {"L4", l4()}};
  for (const Dev& d : devs)
    for (int ci = 0; ci < 3; ++ci)
      for (DType dt : {DType::F32, DType::BF16})
        for (int64_t B : {1, 16, 64, 256})
          for (int64_t H : {128, 256, 512, 768, 1024})
            for (Pass pass : {Pass::FORWARD, Pass::BACKWARD}) {
              char line[400];
              describe_plan(plan(d.info, CellKind(ci), dt, B, H, 1, pass), line, sizeof(line));
              std::printf("%-9s %-8s %-8s B=%-3lld H=%-4lld %s  %s\n", d.name, cells[ci], dtype_name(dt),
                          (long long)B, (long long)H, pass == Pass::FORWARD ? "fwd" : "bwd", line);
            }
}

}  // namespace

int main(int argc, char** argv) {
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
  const std::pair<const char*, void (*)(const Options&)> suites[] = {
      {"structure", suite_structure}, {"planner", suite_planner}, {"seq", suite_seq},
      {"threads", suite_threads}, {"determinism", suite_determinism}, {"broken-seq", suite_broken_seq},
      {"broken-threads", suite_broken_threads}, {"watchdog", suite_watchdog}, {"table", suite_table}};
  const auto t0 = std::chrono::steady_clock::now();
  bool found = false;
  for (const auto& s : suites) {
    const bool in_all = suite == "all" && std::string(s.first) != "broken-threads" && std::string(s.first) != "table";
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
