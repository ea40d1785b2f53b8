// The backward time loop of one block, split by column: the block holds
// W_hh[:, its units] for all steps, dh and dc of its units in its state, and
// each step runs its units' cells backward (cells.h), publishes their hidden
// gate gradients, and after the barrier turns the whole step's gradients into
// dh of its units: dh_{t-1}[J] = dg_t W_hh[:, J] + the direct part (GRU z*dh,
// a finished row's carried dh). Backend-independent (block.h).
#pragma once

#include "args.h"
#include "block.h"

namespace rnnkit {
namespace persistent {

template <class T, MathKind M>
struct BackwardBody : BodyBase<T, BackwardArgs> {
  using Base = BodyBase<T, BackwardArgs>;
  using typename Base::A;
  using Base::g, Base::args, Base::d, Base::p, Base::mem;

  template <class BE>
  RNNKIT_HD BackwardBody(const Geometry& geo, const BackwardArgs& a, BE& be) : Base(geo, a, be) {}

  // W_blk row m = this block's unit m, column k = gate of unit j2 as block q
  // publishes it (k = q * G * units + gate * units + u2); zero for padding.
  RNNKIT_HD T weight(int64_t m, int64_t k) const {
    if (m >= p.units || k >= g.K) return zero<T>();
    const int64_t q = k / g.pub, rest = k % g.pub;
    const int64_t gate = rest / g.units, j2 = q * g.units + rest % g.units;
    if (j2 >= g.H) return zero<T>();
    return static_cast<const T*>(d.w_hh)[(gate * g.H + j2) * g.H + p.j0 + m];
  }

  template <class BE>
  RNNKIT_HD void init(BE& be) {
    const T* grad_hn = static_cast<const T*>(d.grad_hn);
    const T* grad_cn = static_cast<const T*>(d.grad_cn);
    this->load_lengths_and_weights(be, [&](int64_t m, int64_t k) { return weight(m, k); });
    each_thread(be, [&](int tid, int n) {
      for (int64_t i = tid; i < p.rows * p.units; i += n) {
        const int64_t c = i / p.units, u = i % p.units, at = (p.b0 + c) * g.H + p.j0 + u;
        mem.state0[c * g.units + u] = grad_hn ? to_acc(grad_hn[at]) : A(0);
        mem.state1[c * g.units + u] = grad_cn ? to_acc(grad_cn[at]) : A(0);
      }
    });
    publish_initial<T>(be, g, p, [](int64_t, int64_t) { return zero<T>(); });
  }

  template <class BE>
  RNNKIT_HD void step(BE& be, int64_t i) {
    const int64_t s = args.T - 1 - i;
    if (i > 0) block_product<T, M>(be, g, mem, static_cast<int>((i + 1) & 1));
    const int parity = static_cast<int>(i & 1);
    const int64_t G = g.G, H = g.H, B = g.B, width = G * H;  // width: a (T, B, G*H) row
    const T* dy = static_cast<const T*>(d.dy);
    const T* saved = static_cast<const T*>(d.saved);
    const T* h_seq = static_cast<const T*>(d.h_seq);
    const T* h0 = static_cast<const T*>(d.h0);
    const T* c0 = static_cast<const T*>(d.c0);
    T* dgx = static_cast<T*>(d.dgx);
    T* dgh = static_cast<T*>(d.dgh);
    each_thread(be, [&](int tid, int n) {
      for (int64_t item = tid; item < p.rows * p.units; item += n) {
        const int64_t c = item / p.units, u = item % p.units, b = p.b0 + c, j = p.j0 + u;
        A& dh = mem.state0[c * g.units + u];
        A& dc = mem.state1[c * g.units + u];
        if (i > 0) dh += mem.product(g, u, c);
        const int64_t t = row_time(s, mem.len[c], d.reverse);
        const int64_t k_pub = p.k_begin + u;  // + gate * units
        if (t < 0) {  // finished: dh and dc pass through, no gradient at position s
          const int64_t at = s * B + b;
          for (int k = 0; k < G; ++k) {
            dgx[at * width + k * H + j] = zero<T>();
            if (dgh) dgh[at * width + k * H + j] = zero<T>();
            be.template store_x<T>(parity, c, k_pub + k * g.units, zero<T>());
          }
          continue;
        }
        const int64_t at = t * B + b;
        const int64_t t_prev = s == 0 ? -1 : row_time(s - 1, mem.len[c], d.reverse);
        const A g_h = dh + (dy ? to_acc(dy[at * d.dy_stride + j]) : A(0));
        const T* kept = saved ? saved + at * d.saved_stride : nullptr;
        A dx[4], dhid[4];
        A direct = A(0);
        if (g.cell == CellKind::LSTM) {
          const A c_prev = t_prev < 0 ? to_acc(c0[b * H + j])
                                      : to_acc(saved[(t_prev * B + b) * d.saved_stride + 4 * H + j]);
          A dc_prev, h;
          lstm_backward<A>(g_h, dc, to_acc(kept[j]), to_acc(kept[H + j]), to_acc(kept[2 * H + j]),
                           to_acc(kept[3 * H + j]), to_acc(kept[4 * H + j]), c_prev, dx[0], dx[1], dx[2],
                           dx[3], dc_prev, h);
          dc = dc_prev;
          for (int k = 0; k < 4; ++k) dhid[k] = dx[k];
        } else if (g.cell == CellKind::GRU) {
          const A h_prev = t_prev < 0 ? to_acc(h0[b * H + j])
                                      : to_acc(h_seq[(t_prev * B + b) * d.h_seq_stride + j]);
          gru_backward<A>(g_h, to_acc(kept[j]), to_acc(kept[H + j]), to_acc(kept[2 * H + j]), to_acc(kept[3 * H + j]),
                          h_prev, dx[0], dx[1], dx[2], dhid[2], direct);
          dhid[0] = dx[0];
          dhid[1] = dx[1];
        } else {
          dx[0] = dhid[0] = rnn_backward<A>(g.cell, g_h, to_acc(h_seq[at * d.h_seq_stride + j]));
        }
        dh = direct;
        for (int k = 0; k < G; ++k) {
          dgx[at * width + k * H + j] = from_acc<T>(dx[k]);
          if (dgh) dgh[at * width + k * H + j] = from_acc<T>(dhid[k]);
          be.template store_x<T>(parity, c, k_pub + k * g.units, from_acc<T>(dhid[k]));
        }
      }
    });
  }

  template <class BE>
  RNNKIT_HD void finish(BE& be) {
    if (args.T > 0) block_product<T, M>(be, g, mem, static_cast<int>((args.T - 1) & 1));
    T* dh0 = static_cast<T*>(d.dh0);
    T* dc0 = static_cast<T*>(d.dc0);
    each_thread(be, [&](int tid, int n) {
      for (int64_t i = tid; i < p.rows * p.units; i += n) {
        const int64_t c = i / p.units, u = i % p.units, at = (p.b0 + c) * g.H + p.j0 + u;
        A dh = mem.state0[c * g.units + u];
        if (args.T > 0) dh += mem.product(g, u, c);
        dh0[at] = from_acc<T>(dh);
        if (g.cell == CellKind::LSTM) dc0[at] = from_acc<T>(mem.state1[c * g.units + u]);
      }
    });
  }
};

}  // namespace persistent
}  // namespace rnnkit
