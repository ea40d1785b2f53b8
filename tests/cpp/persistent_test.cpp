// CPU checks of the persistent kernels (csrc/persistent/): the kernel bodies
// run on the sequential and the threaded block backends against a float64
// reference, the planner on three GPUs' properties, and the barrier protocol
// with faults injected. Torch-free; tests/test_persistent.py compiles and runs
// it (plain and under ThreadSanitizer).
//
//   persistent_test SUITE [--cases N] [--seed S] [--yield P]
//   suites: structure planner args seq threads determinism broken-seq
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
#include "../../csrc/persistent/check_args.h"
#include "../../csrc/persistent/cpu_backend.h"
#include "../../csrc/persistent/forward_body.h"
#include "../../csrc/persistent/plan.h"
#include "persistent_cases.h"

using namespace rnnkit;
using namespace rnnkit::persistent;
using namespace ptest;

namespace {

// Runs a case's launches on the CPU block backends.
struct CpuLauncher {
  CpuOptions opt;
  template <class T, MathKind M>
  Status forward(const Geometry& g, const ForwardArgs& a, const Buffers&) {
    return run_on_cpu<ForwardBody<T, M>>(g, a, opt);
  }
  template <class T, MathKind M>
  Status backward(const Geometry& g, const BackwardArgs& a, const Buffers&) {
    return run_on_cpu<BackwardBody<T, M>>(g, a, opt);
  }
};

const std::vector<Flavor> kCpuFlavors = {Flavor::F64, Flavor::F32, Flavor::TF32, Flavor::BF16};

Result run_cpu_flavor(Flavor f, const Case& c, const CpuOptions& opt, bool report = true) {
  CpuLauncher launch{opt};
  return ptest::run_flavor(f, c, launch, report);
}

// ---- suites ---------------------------------------------------------------------------

int run_cases(const std::vector<FlavoredCase>& cases, const CpuOptions& opt) {
  int passed = 0;
  for (const FlavoredCase& fc : cases) passed += run_cpu_flavor(fc.flavor, fc.c, opt).ok;
  return passed;
}

void suite_seq(const Options& o) {
  const uint64_t seed = fresh_seed(o);
  const auto cases = make_cases(seed, o.cases < 0 ? 250 : o.cases, kCpuFlavors);
  CpuOptions opt;
  opt.seed = seed;
  std::printf("seq: %d/%zu cases passed (seed %llu)\n", run_cases(cases, opt), cases.size(),
              (unsigned long long)seed);
}

void suite_threads(const Options& o) {
  const uint64_t seed = fresh_seed(o);
  auto cases = make_cases(seed, 0, kCpuFlavors);  // one of each cell x flavor x group kind
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
  for (Flavor f : kCpuFlavors) {
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
      const Result a = run_cpu_flavor(f, c, seq, false);
      const Result b = run_cpu_flavor(f, c, thr, false);
      thr.seed = rng();
      const Result d = run_cpu_flavor(f, c, thr, false);
      ++total;
      const bool ok = a.bytes == b.bytes && b.bytes == d.bytes && !a.bytes.empty();
      same += ok;
      EXPECT(ok, "determinism: outputs differ between runs: %s", c.name("?").c_str());
    }
  }
  std::printf("determinism: %d/%d cases bit-identical across sequential and threaded runs\n", same, total);
}

// Three blocks that depend on each other every step, for the fault tests.
Case coupled_case(std::mt19937_64& rng, CellKind cell, GroupKind group) {
  Case c = random_case(rng, cell, group, Flavor::F64);
  c.blocks = 3, c.H = 9, c.T = 6, c.B = 2, c.rows = 2, c.lengths = false;
  return c;
}

// Runs a case with a fault injected: its failures are the point, not news.
Result run_with_fault(const Case& c, const CpuOptions& opt) {
  const int before = g_failures;
  g_expect_failures = true;
  const Result r = run_cpu_flavor(Flavor::F64, c, opt, true);
  g_expect_failures = false;
  g_failures = before;
  return r;
}

// A block that runs ahead of the barrier (sequential: one phase early) must
// give wrong numbers: the reference check sees a broken barrier.
void suite_broken_seq(const Options& o) {
  const uint64_t seed = fresh_seed(o);
  std::mt19937_64 rng(seed);
  int caught = 0, total = 0;
  for (CellKind cell : {CellKind::LSTM, CellKind::GRU, CellKind::RNN_TANH, CellKind::RNN_RELU}) {
    for (GroupKind grp : {GroupKind::CLUSTER, GroupKind::GRID}) {
      const Case c = coupled_case(rng, cell, grp);
      CpuOptions opt;
      opt.skip_wait_block = 0;
      const Result r = run_with_fault(c, opt);
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
    const Case c = coupled_case(rng, CellKind::LSTM, grp);
    CpuOptions opt;
    opt.threaded = true;
    opt.skip_wait_block = 1;
    opt.yield_probability = o.yield;
    const Result r = run_with_fault(c, opt);
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
    const Result r = run_cpu_flavor(Flavor::F32, c, opt, false);
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
  EXPECT(g.smem_bytes + 1024 <= dev.smem_per_block, "planner %s: %lld bytes of shared memory + 1 KB static > %lld",
         what, (long long)g.smem_bytes, (long long)dev.smem_per_block);
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
  // One group kind forced: the plan uses it, or says why it cannot.
  for (GroupKind grp : {GroupKind::BLOCK, GroupKind::CLUSTER, GroupKind::GRID})
    for (Pass pass : {Pass::FORWARD, Pass::BACKWARD}) {
      const Plan p = plan_layer({CellKind::LSTM, DType::F32, false, 8, 80, 1, false, pass, group_bit(grp)}, h100());
      EXPECT(p.applies && p.geo.group == grp, "planner: %s forced on LSTM fp32 B=8 H=80: %s", group_name(grp),
             p.applies ? group_name(p.geo.group) : p.reason);
    }
  const Plan big_block = plan_layer(
      {CellKind::LSTM, DType::F32, false, 64, 512, 1, false, Pass::FORWARD, group_bit(GroupKind::BLOCK)}, h100());
  EXPECT(!big_block.applies && std::strstr(big_block.reason, "no G1-block plan"),
         "planner: one block cannot hold LSTM fp32 H=512: '%s'", big_block.reason);
  const Plan l4_cluster = plan_layer(
      {CellKind::GRU, DType::BF16, false, 8, 64, 1, false, Pass::FORWARD, group_bit(GroupKind::CLUSTER)}, l4());
  EXPECT(!l4_cluster.applies && std::strstr(l4_cluster.reason, "no thread-block clusters"),
         "planner: clusters forced on an L4: '%s'", l4_cluster.reason);
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

// The entry points' argument checks: every mistake a Status, never a launch.
void suite_args(const Options&) {
  const Plan fwd = plan(h100(), CellKind::LSTM, DType::F32, 3, 17);
  const Plan bwd = plan(h100(), CellKind::GRU, DType::BF16, 3, 17, 1, Pass::BACKWARD);
  EXPECT(fwd.applies && bwd.applies, "args: small plans should apply");
  std::vector<unsigned char> space(fwd.geo.workspace_bytes + bwd.geo.workspace_bytes + 64);
  void* ws = space.data() + (16 - reinterpret_cast<uintptr_t>(space.data()) % 16) % 16;
  int dummy[4];
  ForwardArgs f{};
  f.cell = CellKind::LSTM, f.dtype = DType::F32, f.T = 5, f.B = 3, f.H = 17, f.dirs = 1;
  ForwardDirection& d = f.dir[0];
  d.gx = d.w_hh = d.h0 = d.c0 = dummy;
  d.y = d.h_n = d.c_n = dummy;
  d.y_stride = 17;
  auto code = [&](const ForwardArgs& a, const Plan& p, int64_t bytes) {
    return check_forward_args(p, a, ws, bytes).code;
  };
  EXPECT(code(f, fwd, fwd.geo.workspace_bytes) == StatusCode::OK, "args: valid forward arguments refused: %s",
         check_forward_args(fwd, f, ws, fwd.geo.workspace_bytes).message);
  EXPECT(code(f, fwd, fwd.geo.workspace_bytes - 1) == StatusCode::INVALID_ARGUMENT, "args: small workspace");
  EXPECT(check_forward_args(fwd, f, static_cast<char*>(ws) + 4, fwd.geo.workspace_bytes).code ==
             StatusCode::INVALID_ARGUMENT, "args: misaligned workspace");
  EXPECT(code(f, bwd, bwd.geo.workspace_bytes) == StatusCode::INVALID_ARGUMENT, "args: a backward plan for forward");
  EXPECT(code(f, plan(h100(), CellKind::LSTM, DType::F64, 3, 17), 1 << 20) == StatusCode::DOES_NOT_APPLY,
         "args: a refused plan");
  ForwardArgs bad = f;
  bad.B = 4;
  EXPECT(code(bad, fwd, fwd.geo.workspace_bytes) == StatusCode::INVALID_ARGUMENT, "args: B differs from the plan");
  bad = f;
  bad.dtype = DType::F16;
  EXPECT(code(bad, fwd, fwd.geo.workspace_bytes) == StatusCode::INVALID_ARGUMENT, "args: dtype differs");
  bad = f;
  bad.dir[0].c0 = nullptr;
  EXPECT(code(bad, fwd, fwd.geo.workspace_bytes) == StatusCode::INVALID_ARGUMENT, "args: LSTM without c0");
  bad = f;
  bad.dir[0].y_stride = 16;
  EXPECT(code(bad, fwd, fwd.geo.workspace_bytes) == StatusCode::INVALID_ARGUMENT, "args: y_stride < H");
  bad = f;
  bad.dir[0].saved = dummy;
  bad.dir[0].saved_stride = 17;
  EXPECT(code(bad, fwd, fwd.geo.workspace_bytes) == StatusCode::INVALID_ARGUMENT, "args: saved_stride too small");
  bad = f;
  bad.T = -1;
  EXPECT(code(bad, fwd, fwd.geo.workspace_bytes) == StatusCode::INVALID_ARGUMENT, "args: negative T");

  BackwardArgs b{};
  b.cell = CellKind::GRU, b.dtype = DType::BF16, b.T = 5, b.B = 3, b.H = 17, b.dirs = 1;
  BackwardDirection& e = b.dir[0];
  e.w_hh = e.h0 = e.saved = e.h_seq = dummy;
  e.dgx = e.dgh = e.dh0 = dummy;
  e.saved_stride = 4 * 17, e.h_seq_stride = 17;
  EXPECT(check_backward_args(bwd, b, ws, bwd.geo.workspace_bytes).code == StatusCode::OK,
         "args: valid backward arguments refused: %s", check_backward_args(bwd, b, ws, bwd.geo.workspace_bytes).message);
  BackwardArgs no_dgh = b;
  no_dgh.dir[0].dgh = nullptr;
  EXPECT(check_backward_args(bwd, no_dgh, ws, bwd.geo.workspace_bytes).code == StatusCode::INVALID_ARGUMENT,
         "args: GRU backward without dgh");
  std::printf("args: checked\n");
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
  return run_suites(argc, argv,
                    {{"structure", suite_structure}, {"planner", suite_planner}, {"args", suite_args},
                     {"seq", suite_seq}, {"threads", suite_threads}, {"determinism", suite_determinism},
                     {"broken-seq", suite_broken_seq}, {"broken-threads", suite_broken_threads},
                     {"watchdog", suite_watchdog}, {"table", suite_table}},
                    {"broken-threads", "table"});
}
