// GPU checks of the persistent kernels through their CUDA entry points
// (csrc/persistent/launch.h), torch-free: the CPU test's cases against the
// float64 reference, the planner's own plans on this device, CUDA-graph
// capture, the watchdog, run-to-run bit identity, and time per step.
//
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -o persistent_gpu_test \
//       tests/cpp/persistent_gpu_test.cu csrc/cuda/persistent_kernels.cu \
//       csrc/persistent/plan.cpp csrc/persistent/check_args.cpp
//   ./persistent_gpu_test SUITE [--cases N] [--seed S]
//   suites: cases planned graph watchdog determinism time all (all: but time)
// benchmarks/gpu_run.sh builds and runs it (stage "persistent").
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <tuple>

#include "../../csrc/persistent/launch.h"
#include "persistent_cases.h"

using namespace ptest;

namespace {

#define CUDA_OK(call)                                                                           \
  do {                                                                                          \
    cudaError_t e_ = (call);                                                                    \
    if (e_ != cudaSuccess) {                                                                    \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(2);                                                                             \
    }                                                                                           \
  } while (0)

DeviceInfo g_device;

// Device copies of a case's host buffers; pointers into them are remapped.
class DeviceMirror {
 public:
  explicit DeviceMirror(const Buffers& buffers) {
    for (const auto& [host, bytes] : buffers.list) {
      if (bytes == 0) continue;
      void* dev = nullptr;
      CUDA_OK(cudaMalloc(&dev, bytes));
      CUDA_OK(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
      entries_.emplace_back(static_cast<char*>(host), static_cast<char*>(dev), bytes);
    }
  }
  ~DeviceMirror() {
    for (auto& [host, dev, bytes] : entries_) cudaFree(dev);
  }
  template <class P>
  P map(P p) const {
    if (!p) return p;
    const char* c = reinterpret_cast<const char*>(p);
    for (const auto& [host, dev, bytes] : entries_)
      if (c >= host && c < host + bytes) return reinterpret_cast<P>(dev + (c - host));
    std::fprintf(stderr, "a pointer of the case is not among its buffers\n");
    std::exit(2);
  }
  void copy_back() const {
    for (const auto& [host, dev, bytes] : entries_) CUDA_OK(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
  }

 private:
  std::vector<std::tuple<char*, char*, size_t>> entries_;
};

ForwardArgs on_device(ForwardArgs a, const DeviceMirror& m) {
  a.lengths = m.map(a.lengths);
  for (int d = 0; d < a.dirs; ++d) {
    ForwardDirection& f = a.dir[d];
    f.gx = m.map(f.gx), f.w_hh = m.map(f.w_hh), f.b_hh = m.map(f.b_hh), f.h0 = m.map(f.h0);
    f.c0 = m.map(f.c0), f.y = m.map(f.y), f.h_n = m.map(f.h_n), f.c_n = m.map(f.c_n);
    f.saved = m.map(f.saved), f.h_saved = m.map(f.h_saved);
  }
  return a;
}

BackwardArgs on_device(BackwardArgs a, const DeviceMirror& m) {
  a.lengths = m.map(a.lengths);
  for (int d = 0; d < a.dirs; ++d) {
    BackwardDirection& b = a.dir[d];
    b.w_hh = m.map(b.w_hh), b.dy = m.map(b.dy), b.grad_hn = m.map(b.grad_hn), b.grad_cn = m.map(b.grad_cn);
    b.h0 = m.map(b.h0), b.c0 = m.map(b.c0), b.saved = m.map(b.saved), b.h_seq = m.map(b.h_seq);
    b.dgx = m.map(b.dgx), b.dgh = m.map(b.dgh), b.dh0 = m.map(b.dh0), b.dc0 = m.map(b.dc0);
  }
  return a;
}

// Launches a case's forward/backward on the GPU: with the case's own
// geometry, or (use_planner) with what the planner picks on this device.
struct GpuLauncher {
  bool use_planner = false;
  int repeats = 1;          // > 1: every repeat must give the same bits
  bool graph = false;       // launch through a captured CUDA graph on a side stream
  int64_t watchdog_cycles = 0;
  std::string last_plan;

  Plan plan_for(const Geometry& g) {
    Plan p;
    if (use_planner) {
      p = plan_layer({g.cell, g.dtype, g.math == MathKind::TF32, g.B, g.H, g.dirs, false, g.pass}, g_device);
    } else {
      p.applies = true;
      p.geo = g;
    }
    char line[400];
    describe_plan(p, line, sizeof(line));
    last_plan = line;
    return p;
  }

  template <class Args, class Launch>
  Status run(const Geometry& g, Args args, const Buffers& buffers, const Launch& launch) {
    const Plan plan = plan_for(g);
    if (!plan.applies) return make_status(StatusCode::DOES_NOT_APPLY, "%s", plan.reason);
    args.watchdog_cycles = watchdog_cycles;
    std::vector<unsigned char> first;
    for (int r = 0; r < repeats; ++r) {
      DeviceMirror mirror(buffers);
      const Args dev_args = on_device(args, mirror);
      void* ws = nullptr;
      CUDA_OK(cudaMalloc(&ws, plan.geo.workspace_bytes));
      cudaStream_t stream;
      CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      Status s;
      if (graph) {
        cudaGraph_t captured;
        cudaGraphExec_t exec;
        CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
        s = launch(plan, dev_args, ws, plan.geo.workspace_bytes, stream);
        CUDA_OK(cudaStreamEndCapture(stream, &captured));
        if (s.ok()) {
          CUDA_OK(cudaGraphInstantiate(&exec, captured, 0));
          CUDA_OK(cudaGraphLaunch(exec, stream));
          CUDA_OK(cudaGraphLaunch(exec, stream));  // replays give the same outputs
          CUDA_OK(cudaGraphExecDestroy(exec));
        }
        CUDA_OK(cudaGraphDestroy(captured));
      } else {
        s = launch(plan, dev_args, ws, plan.geo.workspace_bytes, stream);
      }
      CUDA_OK(cudaStreamSynchronize(stream));
      CUDA_OK(cudaGetLastError());
      if (s.ok()) s = read_watchdog(plan, ws, stream);
      CUDA_OK(cudaStreamDestroy(stream));
      CUDA_OK(cudaFree(ws));
      if (!s.ok()) return s;
      mirror.copy_back();
      std::vector<unsigned char> bits;
      for (const auto& [host, bytes] : buffers.list) {
        const unsigned char* p = static_cast<const unsigned char*>(host);
        bits.insert(bits.end(), p, p + bytes);
      }
      if (r == 0) first = bits;
      else if (bits != first)
        return make_status(StatusCode::INVALID_ARGUMENT, "run %d differs from run 0 (not bit-identical)", r);
    }
    return Status{};
  }

  template <class T, MathKind M>
  Status forward(const Geometry& g, const ForwardArgs& a, const Buffers& b) {
    return run(g, a, b, [](const Plan& p, const ForwardArgs& x, void* ws, int64_t n, cudaStream_t s) {
      return rnnkit::persistent::forward(p, x, ws, n, s);
    });
  }
  template <class T, MathKind M>
  Status backward(const Geometry& g, const BackwardArgs& a, const Buffers& b) {
    return run(g, a, b, [](const Plan& p, const BackwardArgs& x, void* ws, int64_t n, cudaStream_t s) {
      return rnnkit::persistent::backward(p, x, ws, n, s);
    });
  }
};

const std::vector<Flavor> kGpuFlavors = {Flavor::F32, Flavor::TF32, Flavor::BF16, Flavor::F16};

// The CPU test's cases (every cell x flavor x group kind, then random ones),
// each with its own forced geometry.
void suite_cases(const Options& o) {
  const uint64_t seed = fresh_seed(o);
  GpuLauncher launch;
  int passed = 0, total = 0;
  for (const FlavoredCase& fc : make_cases(seed, o.cases < 0 ? 150 : o.cases, kGpuFlavors)) {
    if (fc.c.group == GroupKind::CLUSTER && g_device.max_cluster_blocks == 0) continue;
    ++total;
    passed += run_flavor(fc.flavor, fc.c, launch).ok;
  }
  std::printf("cases: %d/%d passed (seed %llu)\n", passed, total, (unsigned long long)seed);
}

// Realistic shapes with the planner's choice on this device; odd sizes and
// lengths included. T is short to keep the float64 reference quick.
void suite_planned(const Options& o) {
  struct Shape {
    CellKind cell;
    Flavor flavor;
    int64_t B, H;
    int dirs;
    bool lengths;
  } shapes[] = {
      {CellKind::LSTM, Flavor::F32, 64, 512, 1, false},  {CellKind::LSTM, Flavor::BF16, 64, 512, 1, false},
      {CellKind::LSTM, Flavor::F16, 16, 768, 1, false},  {CellKind::LSTM, Flavor::TF32, 64, 256, 1, true},
      {CellKind::GRU, Flavor::F32, 17, 384, 2, true},    {CellKind::GRU, Flavor::BF16, 64, 1024, 1, false},
      {CellKind::RNN_TANH, Flavor::F32, 5, 129, 1, true}, {CellKind::RNN_RELU, Flavor::BF16, 256, 128, 1, false},
      {CellKind::LSTM, Flavor::F32, 1, 128, 1, false},   {CellKind::GRU, Flavor::F16, 3, 33, 2, true},
  };
  std::mt19937_64 rng(fresh_seed(o));
  int passed = 0, total = 0;
  for (const Shape& s : shapes) {
    Case c;
    c.cell = s.cell, c.B = s.B, c.H = s.H, c.dirs = s.dirs, c.lengths = s.lengths;
    c.T = 6, c.reverse = rng() % 2, c.seed = rng();
    GpuLauncher launch;
    launch.use_planner = true;
    ++total;
    const bool ok = run_flavor(s.flavor, c, launch).ok;
    passed += ok;
    std::printf("planned: %s %s B=%lld H=%lld dirs=%d: %s   [%s]\n", c.cell == CellKind::LSTM ? "LSTM" : c.cell == CellKind::GRU ? "GRU" : "RNN",
                s.flavor == Flavor::F32 ? "f32" : s.flavor == Flavor::TF32 ? "tf32" : s.flavor == Flavor::BF16 ? "bf16" : "f16",
                (long long)s.B, (long long)s.H, s.dirs, ok ? "ok" : "FAILED", launch.last_plan.c_str());
  }
  std::printf("planned: %d/%d passed\n", passed, total);
}

// Captured in a CUDA graph on a side stream and replayed: the same numbers.
void suite_graph(const Options& o) {
  std::mt19937_64 rng(fresh_seed(o));
  int passed = 0, total = 0;
  for (GroupKind group : {GroupKind::BLOCK, GroupKind::CLUSTER, GroupKind::GRID}) {
    if (group == GroupKind::CLUSTER && g_device.max_cluster_blocks == 0) continue;
    for (Flavor f : {Flavor::F32, Flavor::BF16}) {
      Case c = random_case(rng, CellKind(rng() % 4), group, f);
      GpuLauncher launch;
      launch.graph = true;
      ++total;
      passed += run_flavor(f, c, launch).ok;
    }
  }
  std::printf("graph: %d/%d captured launches passed\n", passed, total);
}

// A watchdog of one cycle trips at the first barrier a GRID block has to
// wait at: the launch must end with the error recorded, not hang; the next
// launch on a fresh workspace is correct again.
void suite_watchdog(const Options& o) {
  std::mt19937_64 rng(fresh_seed(o));
  Case c = random_case(rng, CellKind::LSTM, GroupKind::GRID, Flavor::F32);
  c.blocks = 4, c.H = 33, c.T = 7;
  GpuLauncher launch;
  launch.watchdog_cycles = 1;
  const auto t0 = std::chrono::steady_clock::now();
  const Result r = run_flavor(Flavor::F32, c, launch, false);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++g_checks;
  if (r.fwd_status.code != StatusCode::WATCHDOG) fail("watchdog: a 1-cycle watchdog did not trip: " + std::string(r.fwd_status.message));
  std::printf("watchdog: '%s' after %.3f s\n", r.fwd_status.message, secs);
  GpuLauncher normal;
  ++g_checks;
  if (!run_flavor(Flavor::F32, c, normal).ok) fail("watchdog: the launch after a tripped watchdog failed");
}

// Planned GRID and CLUSTER launches, three times each: bit-identical.
void suite_determinism(const Options& o) {
  std::mt19937_64 rng(fresh_seed(o));
  int passed = 0, total = 0;
  for (Flavor f : kGpuFlavors) {
    Case c;
    c.cell = CellKind(rng() % 4), c.B = 64, c.H = 512, c.T = 6, c.seed = rng();
    GpuLauncher launch;
    launch.use_planner = true;
    launch.repeats = 3;
    ++total;
    passed += run_flavor(f, c, launch).ok;
  }
  std::printf("determinism: %d/%d planned shapes bit-identical over 3 runs\n", passed, total);
}

// Microseconds per step of the planner's kernels, T = 100, on device-resident
// random data (median of 20 launches after 3 warm-ups).
void suite_time(const Options&) {
  struct Shape {
    const char* name;
    CellKind cell;
    DType dtype;
    bool tf32;
    int64_t B, H;
    int dirs;
  } shapes[] = {
      {"LSTM fp32 B=64 H=512 (fastrnns)", CellKind::LSTM, DType::F32, false, 64, 512, 1},
      {"LSTM tf32 B=64 H=512", CellKind::LSTM, DType::F32, true, 64, 512, 1},
      {"LSTM bf16 B=64 H=512", CellKind::LSTM, DType::BF16, false, 64, 512, 1},
      {"LSTM fp16 B=16 H=768 (FlashRNN anchor)", CellKind::LSTM, DType::F16, false, 16, 768, 1},
      {"LSTM fp32 B=64 H=128", CellKind::LSTM, DType::F32, false, 64, 128, 1},
      {"LSTM fp32 B=8 H=256", CellKind::LSTM, DType::F32, false, 8, 256, 1},
      {"LSTM fp32 B=64 H=256", CellKind::LSTM, DType::F32, false, 64, 256, 1},
      {"LSTM bf16 B=256 H=256", CellKind::LSTM, DType::BF16, false, 256, 256, 1},
      {"GRU fp32 B=64 H=512", CellKind::GRU, DType::F32, false, 64, 512, 1},
      {"GRU bf16 B=64 H=1024", CellKind::GRU, DType::BF16, false, 64, 1024, 1},
      {"RNN tanh fp32 B=64 H=512", CellKind::RNN_TANH, DType::F32, false, 64, 512, 1},
      {"LSTM fp32 B=64 H=256 bidirectional", CellKind::LSTM, DType::F32, false, 64, 256, 2},
  };
  const int64_t T = 100;
  std::printf("time: us per step, T=%lld (median of 20)\n", (long long)T);
  std::printf("%-40s %10s %10s %10s  plan (forward | backward)\n", "shape", "infer", "train-fwd", "backward");
  for (const Shape& s : shapes) {
    const int64_t G = gate_count(s.cell) * s.H, W = saved_count(s.cell) * s.H, E = dtype_bytes(s.dtype);
    const int64_t B = s.B, H = s.H;
    const Plan pf = plan_layer({s.cell, s.dtype, s.tf32, B, H, s.dirs, false, Pass::FORWARD}, g_device);
    const Plan pb = plan_layer({s.cell, s.dtype, s.tf32, B, H, s.dirs, false, Pass::BACKWARD}, g_device);
    // Random bytes that are finite in every float type: small values.
    auto device_random = [&](int64_t n) {
      std::vector<unsigned char> host(n * E);
      std::mt19937 rng(12345);
      std::uniform_real_distribution<float> u(-0.5f, 0.5f);
      for (int64_t i = 0; i < n; ++i) {
        const float v = u(rng) / (i % 7 == 0 ? 1.0f : std::sqrt(float(H)));
        if (E == 4) std::memcpy(&host[i * 4], &v, 4);
        else if (s.dtype == DType::BF16) { const HostBf16 b(v); std::memcpy(&host[i * 2], &b, 2); }
        else { const __half h = __float2half_rn(v); std::memcpy(&host[i * 2], &h, 2); }
      }
      void* p = nullptr;
      CUDA_OK(cudaMalloc(&p, host.size()));
      CUDA_OK(cudaMemcpy(p, host.data(), host.size(), cudaMemcpyHostToDevice));
      return p;
    };
    std::vector<void*> owned;
    auto buf = [&](int64_t n) { owned.push_back(device_random(n)); return owned.back(); };
    ForwardArgs fa{};
    fa.cell = s.cell, fa.dtype = s.dtype, fa.T = T, fa.B = B, fa.H = H, fa.dirs = s.dirs;
    BackwardArgs ba{};
    ba.cell = s.cell, ba.dtype = s.dtype, ba.T = T, ba.B = B, ba.H = H, ba.dirs = s.dirs;
    for (int d = 0; d < s.dirs; ++d) {
      ForwardDirection& f = fa.dir[d];
      f.gx = buf(T * B * G), f.w_hh = buf(G * H), f.b_hh = buf(G), f.h0 = buf(B * H), f.c0 = buf(B * H);
      f.y = buf(T * B * H), f.y_stride = H, f.h_n = buf(B * H), f.c_n = buf(B * H);
      f.saved = W ? buf(T * B * W) : nullptr, f.saved_stride = W;
      f.h_saved = buf(T * B * H), f.h_saved_stride = H;
      f.reverse = d == 1;
      BackwardDirection& b = ba.dir[d];
      b.w_hh = f.w_hh, b.dy = buf(T * B * H), b.dy_stride = H, b.grad_hn = buf(B * H), b.grad_cn = buf(B * H);
      b.h0 = f.h0, b.c0 = f.c0, b.saved = f.saved, b.saved_stride = W, b.h_seq = f.h_saved, b.h_seq_stride = H;
      b.dgx = buf(T * B * G), b.dgh = buf(T * B * G), b.dh0 = buf(B * H), b.dc0 = buf(B * H), b.reverse = d == 1;
    }
    ForwardArgs infer = fa;
    for (int d = 0; d < s.dirs; ++d) infer.dir[d].saved = infer.dir[d].h_saved = nullptr;
    void* ws = nullptr;
    CUDA_OK(cudaMalloc(&ws, std::max(pf.geo.workspace_bytes, pb.geo.workspace_bytes) + 256));
    cudaEvent_t e0, e1;
    CUDA_OK(cudaEventCreate(&e0));
    CUDA_OK(cudaEventCreate(&e1));
    auto time_us = [&](const auto& launch) -> double {
      std::vector<float> ms;
      for (int r = 0; r < 23; ++r) {
        CUDA_OK(cudaEventRecord(e0));
        const Status st = launch();
        CUDA_OK(cudaEventRecord(e1));
        CUDA_OK(cudaEventSynchronize(e1));
        if (!st.ok()) return -1;
        float m = 0;
        CUDA_OK(cudaEventElapsedTime(&m, e0, e1));
        if (r >= 3) ms.push_back(m);
      }
      std::sort(ms.begin(), ms.end());
      return ms[ms.size() / 2] * 1000.0 / T;
    };
    const int64_t wb = std::max(pf.geo.workspace_bytes, pb.geo.workspace_bytes);
    double t_inf = -1, t_fwd = -1, t_bwd = -1;
    if (pf.applies) {
      t_inf = time_us([&] { return forward(pf, infer, ws, wb, 0); });
      t_fwd = time_us([&] { return forward(pf, fa, ws, wb, 0); });
    }
    if (pb.applies) t_bwd = time_us([&] { return backward(pb, ba, ws, wb, 0); });
    char lf[400], lb[400];
    describe_plan(pf, lf, sizeof(lf));
    describe_plan(pb, lb, sizeof(lb));
    std::printf("%-40s %10.2f %10.2f %10.2f  %s | %s\n", s.name, t_inf, t_fwd, t_bwd, lf, lb);
    for (void* p : owned) CUDA_OK(cudaFree(p));
    CUDA_OK(cudaFree(ws));
    CUDA_OK(cudaEventDestroy(e0));
    CUDA_OK(cudaEventDestroy(e1));
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Status s = device_info(0, &g_device);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.message);
    return 2;
  }
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, cc %d.%d, %d SMs, %lld KB smem/block, clusters up to %d, cooperative %d\n", prop.name,
              g_device.cc_major, g_device.cc_minor, g_device.sm_count, (long long)(g_device.smem_per_block / 1024),
              g_device.max_cluster_blocks, int(g_device.cooperative_launch));
  return run_suites(argc, argv,
                    {{"cases", suite_cases}, {"planned", suite_planned}, {"graph", suite_graph},
                     {"watchdog", suite_watchdog}, {"determinism", suite_determinism}, {"time", suite_time}},
                    {"time"});
}
