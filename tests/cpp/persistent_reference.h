// A float64 reference for one layer's time loop, forward and backward, in
// the persistent kernels' layouts (csrc/persistent/args.h), written straight
// from torch.nn's formulas with std::exp and std::tanh (independent of
// cells.h, which the kernels use). Rows have their own lengths; reverse runs
// each row from its own last step back to 0.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "../../csrc/cells.h"

namespace ref {

using rnnkit::CellKind;
using Vec = std::vector<double>;

inline int gates(CellKind k) { return rnnkit::gate_count(k); }
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// One direction's inputs and everything the reference computes from them.
struct Direction {
  bool reverse = false;
  Vec gx, w_hh, b_hh, h0, c0;     // b_hh empty: no bias
  Vec dy, grad_hn, grad_cn;       // empty: none
  // forward results
  Vec y, h_n, c_n, saved, h_seq;  // saved: (T, B, saved_count * H), h_seq: (T, B, H)
  // backward results
  Vec dgx, dgh, dh0, dc0;
};

struct Layer {
  CellKind cell;
  int64_t T, B, H;
  std::vector<int64_t> lengths;  // empty: every row runs T steps

  int64_t length(int64_t b) const {
    if (lengths.empty()) return T;
    return lengths[b] < 0 ? 0 : lengths[b] > T ? T : lengths[b];
  }
  int64_t time(int64_t s, int64_t b, bool reverse) const {
    const int64_t len = length(b);
    return s >= len ? -1 : reverse ? len - 1 - s : s;
  }

  void forward(Direction& d) const {
    const int64_t G = gates(cell) * H, W = rnnkit::saved_count(cell) * H;
    d.y.assign(T * B * H, 0.0);
    d.h_seq.assign(T * B * H, 0.0);
    d.saved.assign(T * B * W, 0.0);
    d.h_n.assign(B * H, 0.0);
    d.c_n.assign(B * H, 0.0);
    for (int64_t b = 0; b < B; ++b) {
      Vec h(d.h0.begin() + b * H, d.h0.begin() + (b + 1) * H);
      Vec c = cell == CellKind::LSTM ? Vec(d.c0.begin() + b * H, d.c0.begin() + (b + 1) * H) : Vec(H, 0.0);
      for (int64_t s = 0; s < length(b); ++s) {
        const int64_t t = time(s, b, d.reverse);
        Vec acc(G, 0.0);
        for (int64_t r = 0; r < G; ++r) {
          for (int64_t k = 0; k < H; ++k) acc[r] += d.w_hh[r * H + k] * h[k];
          if (!d.b_hh.empty()) acc[r] += d.b_hh[r];
        }
        const double* x = &d.gx[(t * B + b) * G];
        double* kept = &d.saved[(t * B + b) * W];
        Vec h_new(H);
        for (int64_t j = 0; j < H; ++j) {
          if (cell == CellKind::LSTM) {
            const double i = sigmoid(x[j] + acc[j]), f = sigmoid(x[H + j] + acc[H + j]);
            const double g = std::tanh(x[2 * H + j] + acc[2 * H + j]);
            const double o = sigmoid(x[3 * H + j] + acc[3 * H + j]);
            c[j] = f * c[j] + i * g;
            h_new[j] = o * std::tanh(c[j]);
            kept[j] = i, kept[H + j] = f, kept[2 * H + j] = g, kept[3 * H + j] = o, kept[4 * H + j] = c[j];
          } else if (cell == CellKind::GRU) {
            const double r = sigmoid(x[j] + acc[j]), z = sigmoid(x[H + j] + acc[H + j]);
            const double hn = acc[2 * H + j], n = std::tanh(x[2 * H + j] + r * hn);
            h_new[j] = (1 - z) * n + z * h[j];
            kept[j] = r, kept[H + j] = z, kept[2 * H + j] = n, kept[3 * H + j] = hn;
          } else {
            const double pre = x[j] + acc[j];
            h_new[j] = cell == CellKind::RNN_RELU ? (pre > 0 ? pre : 0.0) : std::tanh(pre);
          }
        }
        h = h_new;
        for (int64_t j = 0; j < H; ++j) d.y[(t * B + b) * H + j] = d.h_seq[(t * B + b) * H + j] = h[j];
      }
      for (int64_t j = 0; j < H; ++j) {
        d.h_n[b * H + j] = h[j];
        d.c_n[b * H + j] = c[j];
      }
    }
  }

  // Needs forward(d) first.
  void backward(Direction& d) const {
    const int64_t G = gates(cell) * H, W = rnnkit::saved_count(cell) * H;
    d.dgx.assign(T * B * G, 0.0);
    d.dgh.assign(T * B * G, 0.0);
    d.dh0.assign(B * H, 0.0);
    d.dc0.assign(B * H, 0.0);
    for (int64_t b = 0; b < B; ++b) {
      Vec dh = d.grad_hn.empty() ? Vec(H, 0.0) : Vec(d.grad_hn.begin() + b * H, d.grad_hn.begin() + (b + 1) * H);
      Vec dc = d.grad_cn.empty() ? Vec(H, 0.0) : Vec(d.grad_cn.begin() + b * H, d.grad_cn.begin() + (b + 1) * H);
      for (int64_t s = length(b) - 1; s >= 0; --s) {
        const int64_t t = time(s, b, d.reverse), tp = s == 0 ? -1 : time(s - 1, b, d.reverse);
        const double* kept = &d.saved[(t * B + b) * W];
        Vec dgh(G), direct(H, 0.0);
        double* dgx = &d.dgx[(t * B + b) * G];
        for (int64_t j = 0; j < H; ++j) {
          const double gh = dh[j] + (d.dy.empty() ? 0.0 : d.dy[(t * B + b) * H + j]);
          if (cell == CellKind::LSTM) {
            const double i = kept[j], f = kept[H + j], g = kept[2 * H + j], o = kept[3 * H + j];
            const double ct = kept[4 * H + j];
            const double cp = tp < 0 ? d.c0[b * H + j] : d.saved[(tp * B + b) * W + 4 * H + j];
            const double th = std::tanh(ct), dct = dc[j] + gh * o * (1 - th * th);
            dgx[j] = dct * g * i * (1 - i);
            dgx[H + j] = dct * cp * f * (1 - f);
            dgx[2 * H + j] = dct * i * (1 - g * g);
            dgx[3 * H + j] = gh * th * o * (1 - o);
            dc[j] = dct * f;
            for (int k = 0; k < 4; ++k) dgh[k * H + j] = dgx[k * H + j];
          } else if (cell == CellKind::GRU) {
            const double r = kept[j], z = kept[H + j], n = kept[2 * H + j], hn = kept[3 * H + j];
            const double hp = tp < 0 ? d.h0[b * H + j] : d.h_seq[(tp * B + b) * H + j];
            const double dn = gh * (1 - z) * (1 - n * n);
            dgx[j] = dgh[j] = dn * hn * r * (1 - r);
            dgx[H + j] = dgh[H + j] = gh * (hp - n) * z * (1 - z);
            dgx[2 * H + j] = dn;
            dgh[2 * H + j] = dn * r;
            direct[j] = gh * z;
          } else {
            const double h = d.h_seq[(t * B + b) * H + j];
            dgx[j] = dgh[j] = cell == CellKind::RNN_RELU ? (h > 0 ? gh : 0.0) : gh * (1 - h * h);
          }
        }
        for (int64_t g = 0; g < G; ++g) d.dgh[(t * B + b) * G + g] = dgh[g];
        for (int64_t k = 0; k < H; ++k) {
          double v = direct[k];
          for (int64_t r = 0; r < G; ++r) v += dgh[r] * d.w_hh[r * H + k];
          dh[k] = v;
        }
      }
      for (int64_t j = 0; j < H; ++j) {
        d.dh0[b * H + j] = dh[j];
        d.dc0[b * H + j] = dc[j];
      }
    }
  }
};

}  // namespace ref
