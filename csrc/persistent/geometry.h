// How one persistent launch cuts a layer into groups, blocks, tiles and
// shared-memory regions. Computed once on the host (by the planner, or
// directly by the tests) and passed to every block by value; the bodies read
// it, never recompute it, so planner, CPU backends and CUDA agree by
// construction.
//
// Cutting (see csrc/persistent/README.md for the picture):
//   grid   = dirs x batch_groups groups, each of `blocks` blocks; block id
//            b -> group b / blocks, rank b % blocks; group -> direction
//            group / batch_groups, rows [gb * rows, ...) of the batch.
//   block  = `units` consecutive hidden units [rank * units, ...). Forward: it
//            holds the G * units rows of W_hh of its units (gates interleaved:
//            local row u * G + g is gate g of unit u) and runs their cells.
//            Backward: it holds the columns W_hh[:, units] and turns the whole
//            step's gate gradients into dh of its units.
//   X      = what the blocks of a group exchange each step, (Np, Kp) with the
//            group's rows as rows: forward h (k = unit), backward the hidden
//            gate gradients (k = rank * G * units + g * units + u, each block's
//            values contiguous). Block `rank` publishes K range
//            [rank * pub, (rank + 1) * pub); the last block also owns the
//            zero padding [blocks * pub, Kp). Double-buffered by step parity.
//   matmul = per block out (Mp, Np) = W_blk (Mp, Kp) X^T, as tiles of
//            tile_m x tile_n over `splits` K slices, each slice summed into
//            its own partial buffer; the cell sums the slices in order, so
//            results are bit-identical from run to run.
#pragma once

#include "types.h"

namespace rnnkit {
namespace persistent {

struct MathTraits {
  int32_t tile_m, tile_n, step_k, lanes;  // lanes: threads that compute one tile together
};

RNNKIT_HD MathTraits math_traits(MathKind m) {
  switch (m) {
    case MathKind::TF32: return {16, 8, 8, 32};   // mma.sync m16n8k8, one warp a tile
    case MathKind::MMA16: return {16, 8, 16, 32};  // mma.sync m16n8k16, one warp a tile
    case MathKind::FFMA: break;
  }
  return {4, 4, 4, 1};  // one thread a 4 x 4 register tile, k in steps of 4
}

inline int32_t dtype_bytes(DType d) {
  return d == DType::F64 ? 8 : d == DType::F32 ? 4 : 2;
}

// What the planner chooses; the rest of a Geometry follows from it.
struct Choice {
  GroupKind group;
  int64_t rows;     // batch rows per group
  int32_t blocks;   // blocks per group (1 for BLOCK)
  int32_t threads;  // per block, a multiple of 32
  int64_t chunk;    // GRID: K values staged per pass; 0 or >= Kp: all at once
};

struct Geometry {
  CellKind cell;
  DType dtype;
  MathKind math;
  GroupKind group;
  Pass pass;
  int32_t G;
  int64_t B, H;
  int32_t dirs, batch_groups;
  int64_t rows;     // batch rows per group; the last group may have fewer
  int32_t blocks;   // per group
  int64_t units;    // hidden units per block; the last blocks may have fewer
  int32_t threads;
  int32_t tile_m, tile_n, step_k, lanes;
  int64_t M, Mp;    // output rows of a block's matmul (forward G*units, backward units), padded
  int64_t Np;       // rows of X (the group's batch rows), padded to tile_n
  int64_t pub;      // values a block publishes per batch row (forward units, backward G*units)
  int64_t K, Kp;    // blocks * pub, padded to step_k
  int64_t chunk;    // K values per staging pass (Kp unless GRID)
  int32_t splits;   // K slices of the matmul
  int64_t split_len;
  int64_t ldw, ldx, ld_stage;  // leading dimensions in elements (padded rows)
  int32_t elem_bytes, acc_bytes;
  // Shared memory per block, byte offsets.
  int64_t off_w, off_x, off_part, off_state, off_len, smem_bytes;
  // Global workspace, byte offsets: step flags and the error record (zeroed
  // before every launch), then GRID's exchange buffers.
  int64_t ws_flags, ws_error, ws_exchange, ws_clear_bytes, workspace_bytes;

  RNNKIT_HD int32_t groups() const { return dirs * batch_groups; }
  RNNKIT_HD int64_t grid_blocks() const { return int64_t(groups()) * blocks; }
  // X complete in each block's own shared memory after a barrier (BLOCK,
  // CLUSTER), or one copy per group in global memory (GRID).
  RNNKIT_HD bool replicated() const { return group != GroupKind::GRID; }
  RNNKIT_HD int64_t chunks() const { return replicated() ? 1 : ceil_div(Kp, chunk); }
};

// Error record in the workspace, int64 words: code, group, rank, epoch.
constexpr int kErrorWords = 4;

inline int64_t align_to(int64_t v, int64_t a) { return round_up(v, a); }

inline Geometry make_geometry(CellKind cell, DType dtype, MathKind math, Pass pass, int64_t B,
                              int64_t H, int32_t dirs, const Choice& c) {
  Geometry g{};
  const MathTraits mt = math_traits(math);
  g.cell = cell;
  g.dtype = dtype;
  g.math = math;
  g.group = c.group;
  g.pass = pass;
  g.G = gate_count(cell);
  g.B = B;
  g.H = H;
  g.dirs = dirs;
  g.rows = c.rows;
  g.batch_groups = static_cast<int32_t>(ceil_div(B, c.rows));
  g.blocks = c.blocks;
  g.units = ceil_div(H, c.blocks);
  g.threads = c.threads;
  g.tile_m = mt.tile_m;
  g.tile_n = mt.tile_n;
  g.step_k = mt.step_k;
  g.lanes = mt.lanes;
  g.M = pass == Pass::FORWARD ? g.G * g.units : g.units;
  g.Mp = round_up(g.M, g.tile_m);
  g.Np = round_up(g.rows, g.tile_n);
  g.pub = pass == Pass::FORWARD ? g.units : g.G * g.units;
  g.K = g.blocks * g.pub;
  g.Kp = round_up(g.K, g.step_k);
  g.chunk = (g.replicated() || c.chunk <= 0 || c.chunk >= g.Kp) ? g.Kp : round_up(c.chunk, g.step_k);
  if (g.chunk > g.Kp) g.chunk = g.Kp;

  // Enough K slices to give every worker (a thread, or a warp for tensor
  // cores) a tile, each slice at least 16 deep.
  const int64_t tiles = (g.Mp / g.tile_m) * (g.Np / g.tile_n);
  const int64_t workers = g.threads / g.lanes;
  int64_t want = ceil_div(workers, tiles);
  const int64_t min_len = g.step_k > 16 ? g.step_k : 16;
  g.split_len = round_up(ceil_div(g.Kp, want < 1 ? 1 : want), g.step_k);
  if (g.split_len < min_len) g.split_len = min_len;
  g.splits = static_cast<int32_t>(ceil_div(g.Kp, g.split_len));

  g.elem_bytes = dtype_bytes(dtype);
  g.acc_bytes = dtype == DType::F64 ? 8 : 4;
  const int64_t pad = 16 / g.elem_bytes;  // one 16-byte access per row: fewer bank conflicts
  g.ldw = g.Kp + pad;
  g.ldx = g.Kp + pad;
  g.ld_stage = g.chunk + pad;

  int64_t off = 0;
  g.off_w = off;
  off = align_to(off + g.Mp * g.ldw * g.elem_bytes, 16);
  g.off_x = off;
  off = align_to(off + (g.replicated() ? 2 * g.Np * g.ldx : g.Np * g.ld_stage) * g.elem_bytes, 16);
  g.off_part = off;
  off = align_to(off + int64_t(g.splits) * g.Mp * g.Np * g.acc_bytes, 16);
  g.off_state = off;  // forward h and c, backward dh and dc: (rows, units) each
  off = align_to(off + 2 * g.rows * g.units * g.acc_bytes, 16);
  g.off_len = off;
  off = align_to(off + g.rows * 8, 16);
  g.smem_bytes = off;

  int64_t ws = 0;
  g.ws_flags = ws;
  ws = align_to(ws + g.grid_blocks() * 8, 128);
  g.ws_error = ws;
  ws = align_to(ws + kErrorWords * 8, 128);
  g.ws_clear_bytes = ws;
  g.ws_exchange = ws;
  if (!g.replicated()) ws += int64_t(g.groups()) * 2 * g.Np * g.Kp * g.elem_bytes;
  g.workspace_bytes = align_to(ws, 256);
  return g;
}

}  // namespace persistent
}  // namespace rnnkit
