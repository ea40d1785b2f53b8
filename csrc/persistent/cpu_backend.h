// Block backends that run the persistent kernel bodies on the CPU, for tests:
//
//   sequential  the blocks of a phase (init, step i, finish) run one after
//               another, in a random order, phase after phase: checks the
//               partitioning, the gate interleave, the backward column split
//               and that no block reads what another writes in the same phase.
//   threaded    one std::thread per block, the group barrier on per-block
//               std::atomic step flags (store-release, poll-acquire), epochs
//               that only grow, random yields and sleeps, and a watchdog that
//               turns a barrier that waits too long into an error. Built with
//               -fsanitize=thread it checks the protocol for data races.
//
// Shared memory and the exchange buffers start filled with 0xFF bytes (NaN
// for every float type), so a read of something never written shows.
// The threads of one block run as loops inside its OS thread: sync_block has
// nothing to do.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <thread>
#include <type_traits>
#include <vector>

#include "block.h"

namespace rnnkit {
namespace persistent {

struct CpuOptions {
  bool threaded = false;
  uint64_t seed = 1;
  double yield_probability = 0.0;  // threaded: chance of a yield at each worker and barrier
  int64_t watchdog_ms = 20000;     // threaded: longest wait at one barrier
  // Fault injection, to show the tests catch a broken protocol. skip_wait:
  // this block arrives at every barrier but never waits (threaded), or runs
  // every step one phase ahead of the others (sequential). stuck: this block
  // stops for good before arriving at barrier `stuck_epoch`.
  int skip_wait_block = -1;
  int stuck_block = -1;
  int64_t stuck_epoch = 0;
};

// What all the blocks of one launch share.
class CpuGrid {
 public:
  CpuGrid(const Geometry& geo, const CpuOptions& opt)
      : g(geo), opt(opt), flags(new std::atomic<int64_t>[geo.grid_blocks()]) {
    for (int64_t b = 0; b < geo.grid_blocks(); ++b) {
      smem.emplace_back(new unsigned char[geo.smem_bytes]);
      std::fill(smem.back().get(), smem.back().get() + geo.smem_bytes, 0xFF);
      flags[b].store(0);
    }
    const int64_t bytes = geo.workspace_bytes - geo.ws_exchange;
    exchange.reset(new unsigned char[bytes > 0 ? bytes : 1]);
    std::fill(exchange.get(), exchange.get() + bytes, 0xFF);
  }

  Status status() const {
    if (error.load() == 0) return Status{};
    return make_status(StatusCode::WATCHDOG,
                       "persistent kernel: barrier %lld of group %d timed out at rank %d after %lld ms",
                       static_cast<long long>(error_epoch), error_group, error_rank,
                       static_cast<long long>(opt.watchdog_ms));
  }

  const Geometry& g;
  const CpuOptions opt;
  std::vector<std::unique_ptr<unsigned char[]>> smem;  // per block
  std::unique_ptr<unsigned char[]> exchange;            // GRID: X per group and parity
  std::unique_ptr<std::atomic<int64_t>[]> flags;        // per block: the last epoch it arrived at
  std::atomic<int> error{0};
  // Written once by the block that set `error`, read after the threads joined.
  int error_group = -1, error_rank = -1;
  int64_t error_epoch = -1;
};

template <bool Replicated, bool Threaded>
class CpuBackend {
 public:
  static constexpr bool kReplicated = Replicated;

  CpuBackend(CpuGrid& grid, int block)
      : grid_(grid), g_(grid.g), block_(block), rng_(grid.opt.seed * 1000003u + block) {}

  int group() const { return block_ / g_.blocks; }
  int rank() const { return block_ % g_.blocks; }
  unsigned char* smem() { return grid_.smem[block_].get(); }

  template <int Lanes, class F>
  void each_worker(const F& f) {
    const int workers = g_.threads / Lanes;
    for (int w = 0; w < workers; ++w) {
      maybe_yield();
      f(w, workers, -1);
    }
  }

  void sync_block() {}

  template <class T>
  void store_x(int parity, int64_t c, int64_t k, T v) {
    if constexpr (Replicated) {
      const int64_t at = (parity * g_.Np + c) * g_.ldx + k;
      for (int r = 0; r < g_.blocks; ++r) {
        unsigned char* peer = grid_.smem[group() * g_.blocks + r].get();
        reinterpret_cast<T*>(peer + g_.off_x)[at] = v;
      }
    } else {
      exchange<T>()[((group() * 2 + parity) * g_.Np + c) * g_.Kp + k] = v;
    }
  }

  template <class T>
  T load_x(int parity, int64_t c, int64_t k) {
    return exchange<T>()[((group() * 2 + parity) * g_.Np + c) * g_.Kp + k];
  }

  bool group_barrier(int64_t epoch) {
    if (!Threaded) return true;  // the sequential driver orders the phases
    const CpuOptions& opt = grid_.opt;
    if (block_ == opt.stuck_block && epoch == opt.stuck_epoch) return false;
    maybe_yield();
    std::atomic<int64_t>* flags = grid_.flags.get() + group() * g_.blocks;
    flags[rank()].store(epoch, std::memory_order_release);
    if (block_ == opt.skip_wait_block) return true;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(opt.watchdog_ms);
    for (int r = 0; r < g_.blocks; ++r) {
      while (flags[r].load(std::memory_order_acquire) < epoch) {
        if (grid_.error.load(std::memory_order_relaxed) != 0) return false;
        if (std::chrono::steady_clock::now() > deadline) {
          int expected = 0;
          if (grid_.error.compare_exchange_strong(expected, 1)) {
            grid_.error_group = group();
            grid_.error_rank = rank();
            grid_.error_epoch = epoch;
          }
          return false;
        }
        std::this_thread::yield();
      }
    }
    return true;
  }

 private:
  template <class T>
  T* exchange() {
    return reinterpret_cast<T*>(grid_.exchange.get());
  }

  void maybe_yield() {
    if (!Threaded || grid_.opt.yield_probability <= 0) return;
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
    if (u < grid_.opt.yield_probability * 0.05) {
      std::this_thread::sleep_for(std::chrono::microseconds(rng_() % 200));
    } else if (u < grid_.opt.yield_probability) {
      std::this_thread::yield();
    }
  }

  CpuGrid& grid_;
  const Geometry& g_;
  int block_;
  std::minstd_rand rng_;
};

// Runs one launch of Body (ForwardBody or BackwardBody) on the CPU.
template <class Body, class Args>
Status run_on_cpu(const Geometry& g, const Args& args, const CpuOptions& opt) {
  CpuGrid grid(g, opt);
  const int n = static_cast<int>(g.grid_blocks());
  auto launch = [&](auto replicated) {
    constexpr bool kRep = decltype(replicated)::value;
    if (opt.threaded) {
      std::vector<std::thread> threads;
      for (int b = 0; b < n; ++b) {
        threads.emplace_back([&, b] {
          CpuBackend<kRep, true> be(grid, b);
          Body body(g, args, be);
          run_block(body, be, args.T);
        });
      }
      for (std::thread& t : threads) t.join();
      return;
    }
    std::vector<CpuBackend<kRep, false>> backends;
    std::vector<Body> bodies;
    backends.reserve(n);
    bodies.reserve(n);
    for (int b = 0; b < n; ++b) backends.emplace_back(grid, b);
    for (int b = 0; b < n; ++b) bodies.emplace_back(g, args, backends[b]);
    std::minstd_rand rng(opt.seed);
    std::vector<int> order(n);
    auto phase = [&](const auto& run) {  // every block once, in a random order
      for (int b = 0; b < n; ++b) order[b] = b;
      std::shuffle(order.begin(), order.end(), rng);
      for (int b : order) run(b);
    };
    const int ahead = opt.skip_wait_block;
    phase([&](int b) { bodies[b].init(backends[b]); });
    for (int64_t i = 0; i <= args.T; ++i) {
      phase([&](int b) {
        const int64_t step = b == ahead ? i : i - 1;  // `ahead` runs one phase early
        if (step >= 0 && step < args.T) bodies[b].step(backends[b], step);
      });
    }
    phase([&](int b) { bodies[b].finish(backends[b]); });
  };
  if (g.replicated()) launch(std::true_type{});
  else launch(std::false_type{});
  return grid.status();
}

}  // namespace persistent
}  // namespace rnnkit
