// What a kernel body asks of the place it runs (a "block backend"), the
// driver loop every backend runs, and the block's recurrent product, written
// once for the CUDA kernels and the CPU backends.
//
// A backend BE provides:
//   static constexpr bool kReplicated  X is complete in the block's own shared
//                                      memory after a barrier (BLOCK, CLUSTER),
//                                      else one copy per group in global memory
//   int group(), rank()                this block's group, and its rank in it
//   unsigned char* smem()              geo.smem_bytes of block-private memory
//   each_worker<Lanes>(f)              f(worker, workers, lane) for every
//                                      worker of Lanes threads (Lanes 1: every
//                                      thread). On the CPU a worker is one call
//                                      with lane -1: it does the whole tile
//   sync_block()                       __syncthreads
//   store_x<T>(parity, c, k, v)        publish X[parity][c][k] to the group
//   load_x<T>(parity, c, k)            read it back (GRID only)
//   group_barrier(epoch)               everything this block published is
//                                      visible to the group, and everything the
//                                      group published before its arrival at
//                                      `epoch` is visible here; false: stop (the
//                                      watchdog tripped). Epochs grow by one per
//                                      barrier and are never reset.
//
// A body provides init (before the first barrier), step(i) (between two) and
// finish (after the last); a block's code between two barriers never waits
// for another block, so the sequential CPU backend can run the blocks of a
// phase one after another in any order.
#pragma once

#include <type_traits>

#include "geometry.h"
#include "tile_math.h"

namespace rnnkit {
namespace persistent {

template <class Body, class BE>
RNNKIT_HD void run_block(Body& body, BE& be, int64_t steps) {
  body.init(be);
  if (!be.group_barrier(1)) return;
  for (int64_t i = 0; i < steps; ++i) {
    body.step(be, i);
    if (!be.group_barrier(i + 2)) return;
  }
  body.finish(be);
}

// f(tid, threads) for every thread of the block.
template <class BE, class F>
RNNKIT_HD void each_thread(BE& be, const F& f) {
  be.template each_worker<1>([&](int worker, int workers, int) { f(worker, workers); });
}

// Where a block's shared-memory regions start.
template <class T>
struct BlockMemory {
  using A = acc_t<T>;
  T* w;        // (Mp, ldw) this block's operand of the recurrent product
  T* x;        // replicated: X[2][Np][ldx]; GRID: one staged chunk (Np, ld_stage)
  A* part;     // (splits, Mp, Np) the product's K slices
  A* state0;   // (rows, units): forward h, backward dh
  A* state1;   // (rows, units): forward c, backward dc
  int64_t* len;  // (rows) each row's length, clamped to [0, T]

  RNNKIT_HD BlockMemory(const Geometry& g, unsigned char* smem)
      : w(reinterpret_cast<T*>(smem + g.off_w)),
        x(reinterpret_cast<T*>(smem + g.off_x)),
        part(reinterpret_cast<A*>(smem + g.off_part)),
        state0(reinterpret_cast<A*>(smem + g.off_state)),
        state1(reinterpret_cast<A*>(smem + g.off_state) + g.rows * g.units),
        len(reinterpret_cast<int64_t*>(smem + g.off_len)) {}

  // Sum of the K slices of output row m, batch column c, in slice order.
  RNNKIT_HD A product(const Geometry& g, int64_t m, int64_t c) const {
    A v = A(0);
    for (int32_t s = 0; s < g.splits; ++s) v += part[(s * g.Mp + m) * g.Np + c];
    return v;
  }
};

// Which part of the problem a block owns.
struct BlockPlace {
  int32_t dir;      // direction
  int32_t rank;     // in the group
  int64_t b0, rows;    // batch rows [b0, b0 + rows)
  int64_t j0, units;   // hidden units [j0, j0 + units)
  int64_t k_begin, k_end;  // the K range of X this block publishes (with padding)

  RNNKIT_HD BlockPlace(const Geometry& g, int group, int rank_)
      : dir(group / g.batch_groups), rank(rank_) {
    const int64_t gb = group % g.batch_groups;
    b0 = gb * g.rows;
    rows = min64(g.rows, g.B - b0);
    j0 = rank * g.units;
    units = max64(0, min64(g.units, g.H - j0));
    k_begin = rank * g.pub;
    k_end = rank == g.blocks - 1 ? g.Kp : k_begin + g.pub;
  }
};

// What both bodies start from: where the block sits, its memory, its
// direction's pointers; and their common first step, each row's length and
// this block's operand W_blk (weight(m, k), zero for padding).
template <class T, class Args>
struct BodyBase {
  using A = acc_t<T>;
  using Direction = typename std::remove_reference<decltype(Args{}.dir[0])>::type;
  const Geometry& g;
  const Args& args;
  const Direction& d;
  BlockPlace p;
  BlockMemory<T> mem;

  template <class BE>
  RNNKIT_HD BodyBase(const Geometry& geo, const Args& a, BE& be)
      : g(geo),
        args(a),
        d(a.dir[geo.dirs > 1 ? be.group() / geo.batch_groups : 0]),
        p(geo, be.group(), be.rank()),
        mem(geo, be.smem()) {}

  template <class BE, class Weight>
  RNNKIT_HD void load_lengths_and_weights(BE& be, const Weight& weight) {
    each_thread(be, [&](int tid, int n) {
      for (int64_t c = tid; c < p.rows; c += n) {
        const int64_t len = args.lengths ? args.lengths[p.b0 + c] : args.T;
        mem.len[c] = max64(0, min64(len, args.T));
      }
      for (int64_t i = tid; i < g.Mp * g.ldw; i += n) mem.w[i] = weight(i / g.ldw, i % g.ldw);
    });
  }
};

// Everything this block publishes at init: zeros, and `first(c, k)` for the
// real rows and units (forward: h0), in both parities, so that padding reads
// as zero for every later step and nothing reads unwritten memory.
template <class T, class BE, class F>
RNNKIT_HD void publish_initial(BE& be, const Geometry& g, const BlockPlace& p, const F& first) {
  const int64_t width = p.k_end - p.k_begin;
  each_thread(be, [&](int tid, int n) {
    for (int64_t i = tid; i < g.Np * width; i += n) {
      const int64_t c = i / width, k = p.k_begin + i % width;
      be.template store_x<T>(0, c, k, zero<T>());
      be.template store_x<T>(1, c, k, c < p.rows ? first(c, k) : zero<T>());
    }
  });
}

// out = W_blk X[parity]^T into the K-slice partials, followed by sync_block.
// GRID stages X through shared memory chunk by chunk.
template <class T, MathKind M, class BE>
RNNKIT_HD void block_product(BE& be, const Geometry& g, const BlockMemory<T>& mem, int parity) {
  using Math = TileMath<T, M>;
  const int64_t n_mt = g.Mp / g.tile_m, n_nt = g.Np / g.tile_n;
  const int64_t tiles = g.splits * n_mt * n_nt;
  const int64_t chunks = g.chunks();
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const T* x;
    int64_t ldx, k0, k1;
    if constexpr (BE::kReplicated) {
      x = mem.x + parity * g.Np * g.ldx;
      ldx = g.ldx;
      k0 = 0;
      k1 = g.Kp;
    } else {
      k0 = ch * g.chunk;
      k1 = min64(g.Kp, k0 + g.chunk);
      const int64_t width = k1 - k0;
      each_thread(be, [&](int tid, int n) {
        for (int64_t i = tid; i < g.Np * width; i += n) {
          const int64_t c = i / width, kk = i % width;
          mem.x[c * g.ld_stage + kk] = be.template load_x<T>(parity, c, k0 + kk);
        }
      });
      be.sync_block();
      x = mem.x;
      ldx = g.ld_stage;
    }
    // Tile order: batch tiles fastest, so neighbouring workers share W rows.
    be.template each_worker<Math::kLanes>([&](int worker, int workers, int lane) {
      for (int64_t tile = worker; tile < tiles; tile += workers) {
        const int64_t nt = tile % n_nt, mt = (tile / n_nt) % n_mt, s = tile / (n_nt * n_mt);
        const int64_t s_begin = s * g.split_len, s_end = min64(g.Kp, s_begin + g.split_len);
        const int64_t a = max64(s_begin, k0), b = min64(s_end, k1);
        if (a >= b) continue;
        Math::tile(mem.w + mt * g.tile_m * g.ldw, g.ldw, x + nt * g.tile_n * ldx, ldx, k0, a, b,
                   mem.part + (s * g.Mp + mt * g.tile_m) * g.Np + nt * g.tile_n, g.Np,
                   a == s_begin, lane);
      }
    });
    be.sync_block();
  }
}

}  // namespace persistent
}  // namespace rnnkit
