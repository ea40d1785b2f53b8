// The forward time loop of one block: its units' rows of W_hh stay in shared
// memory for all steps, h and c of its units in its state, and each step is
// the product with the group's h_{t-1}, the cell (cells.h), and publishing
// h_t for the next step. Backend-independent (block.h).
#pragma once

#include "args.h"
#include "block.h"

namespace rnnkit {
namespace persistent {

template <class T, MathKind M>
struct ForwardBody : BodyBase<T, ForwardArgs> {
  using Base = BodyBase<T, ForwardArgs>;
  using typename Base::A;
  using Base::g, Base::args, Base::d, Base::p, Base::mem;

  template <class BE>
  RNNKIT_HD ForwardBody(const Geometry& geo, const ForwardArgs& a, BE& be) : Base(geo, a, be) {}

  // W_blk row m = u * G + gate (gate of this block's unit u), column k = unit k
  // of h; zero for padding.
  RNNKIT_HD T weight(int64_t m, int64_t k) const {
    const int64_t u = m / g.G, gate = m % g.G;
    if (m >= g.M || u >= p.units || k >= g.H) return zero<T>();
    return static_cast<const T*>(d.w_hh)[(gate * g.H + p.j0 + u) * g.H + k];
  }

  template <class BE>
  RNNKIT_HD void init(BE& be) {
    const T* h0 = static_cast<const T*>(d.h0);
    const T* c0 = static_cast<const T*>(d.c0);
    this->load_lengths_and_weights(be, [&](int64_t m, int64_t k) { return weight(m, k); });
    each_thread(be, [&](int tid, int n) {
      for (int64_t i = tid; i < p.rows * p.units; i += n) {
        const int64_t c = i / p.units, u = i % p.units, at = (p.b0 + c) * g.H + p.j0 + u;
        mem.state0[c * g.units + u] = to_acc(h0[at]);
        mem.state1[c * g.units + u] = g.cell == CellKind::LSTM ? to_acc(c0[at]) : A(0);
      }
    });
    publish_initial<T>(be, g, p, [&](int64_t c, int64_t k) {
      const int64_t u = k - p.k_begin;
      return u < p.units ? h0[(p.b0 + c) * g.H + p.j0 + u] : zero<T>();
    });
  }

  template <class BE>
  RNNKIT_HD void step(BE& be, int64_t s) {
    block_product<T, M>(be, g, mem, static_cast<int>((s + 1) & 1));
    const int parity = static_cast<int>(s & 1);
    const int64_t G = g.G, H = g.H, B = g.B, width = G * H;  // width: a (T, B, G*H) row
    const T* gx = static_cast<const T*>(d.gx);
    const T* b_hh = static_cast<const T*>(d.b_hh);
    T* y = static_cast<T*>(d.y);
    T* saved = static_cast<T*>(d.saved);
    T* h_saved = static_cast<T*>(d.h_saved);
    const int kept = saved_count(g.cell);
    each_thread(be, [&](int tid, int n) {
      for (int64_t i = tid; i < p.rows * p.units; i += n) {
        const int64_t c = i / p.units, u = i % p.units, b = p.b0 + c, j = p.j0 + u;
        A& h_state = mem.state0[c * g.units + u];
        A& c_state = mem.state1[c * g.units + u];
        const int64_t t = row_time(s, mem.len[c], d.reverse);
        if (t < 0) {  // finished: carry the state, zero this row's position s
          const int64_t at = s * B + b;
          y[at * d.y_stride + j] = zero<T>();
          if (saved)
            for (int k = 0; k < kept; ++k) saved[at * d.saved_stride + k * H + j] = zero<T>();
          if (h_saved) h_saved[at * d.h_saved_stride + j] = zero<T>();
          be.template store_x<T>(parity, c, p.k_begin + u, from_acc<T>(h_state));
          continue;
        }
        const int64_t at = t * B + b;
        const T* gx_row = gx + at * width;
        A pre[4], hid[4];
        for (int k = 0; k < G; ++k) {
          hid[k] = mem.product(g, u * G + k, c) + (b_hh ? to_acc(b_hh[k * H + j]) : A(0));
          pre[k] = to_acc(gx_row[k * H + j]);
        }
        A h, keep[5];
        if (g.cell == CellKind::LSTM) {
          lstm_forward<A>(pre[0] + hid[0], pre[1] + hid[1], pre[2] + hid[2], pre[3] + hid[3],
                          c_state, keep[0], keep[1], keep[2], keep[3], keep[4], h);
          c_state = keep[4];
        } else if (g.cell == CellKind::GRU) {
          gru_forward<A>(pre[0], pre[1], pre[2], hid[0], hid[1], hid[2], h_state, keep[0],
                         keep[1], keep[2], h);
          keep[3] = hid[2];
        } else {
          h = rnn_forward<A>(g.cell, pre[0] + hid[0]);
        }
        h_state = h;
        y[at * d.y_stride + j] = from_acc<T>(h);
        if (saved)
          for (int k = 0; k < kept; ++k) saved[at * d.saved_stride + k * H + j] = from_acc<T>(keep[k]);
        if (h_saved) h_saved[at * d.h_saved_stride + j] = from_acc<T>(h);
        be.template store_x<T>(parity, c, p.k_begin + u, from_acc<T>(h));
      }
    });
  }

  template <class BE>
  RNNKIT_HD void finish(BE& be) {
    T* h_n = static_cast<T*>(d.h_n);
    T* c_n = static_cast<T*>(d.c_n);
    each_thread(be, [&](int tid, int n) {
      for (int64_t i = tid; i < p.rows * p.units; i += n) {
        const int64_t c = i / p.units, u = i % p.units, at = (p.b0 + c) * g.H + p.j0 + u;
        h_n[at] = from_acc<T>(mem.state0[c * g.units + u]);
        if (g.cell == CellKind::LSTM) c_n[at] = from_acc<T>(mem.state1[c * g.units + u]);
      }
    });
  }
};

}  // namespace persistent
}  // namespace rnnkit
