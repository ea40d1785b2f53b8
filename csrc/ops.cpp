// The op schemas (namespace rnnkit) and their CPU registration. The same
// device-neutral driver serves CUDA: when the CUDA sources are built, the
// CUDA dispatch key is registered here too and the planner picks a CUDA
// strategy at run time. Fake kernels and autograd live in rnnkit/ops.py.
//
// `saved` holds what backward needs (cell_units.h: saved_width per row and
// time); output_mask says which gradients backward computes, in the order of
// its outputs (the others come back as empty (0,) tensors).
#include <torch/library.h>

#include "sequence.h"

namespace rnnkit {

TORCH_LIBRARY(rnnkit, m) {
  m.def(
      "rnn_layer(Tensor x, Tensor h0, Tensor? c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, Tensor? w_hr, Tensor? lengths, str mode, bool reverse, bool training) "
      "-> (Tensor y, Tensor h_n, Tensor c_n, Tensor saved)");
  m.def(
      "rnn_layer_backward(Tensor? grad_y, Tensor? grad_hn, Tensor? grad_cn, Tensor x, Tensor h0, "
      "Tensor? c0, Tensor w_ih, Tensor w_hh, Tensor? w_hr, Tensor? lengths, Tensor saved, "
      "str mode, bool reverse, bool[8] output_mask) -> (Tensor grad_x, Tensor grad_h0, Tensor grad_c0, "
      "Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh, Tensor grad_w_hr)");
  m.def(
      "rnn_cell(Tensor x, Tensor h, Tensor? c, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, str mode, bool training) -> (Tensor h_new, Tensor c_new, Tensor saved)");
  m.def(
      "rnn_cell_backward(Tensor? grad_h, Tensor? grad_c, Tensor x, Tensor h, Tensor? c, "
      "Tensor w_ih, Tensor w_hh, Tensor saved, str mode, bool[7] output_mask) -> (Tensor grad_x, "
      "Tensor grad_h, Tensor grad_c, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_b_ih, "
      "Tensor grad_b_hh)");
}

#define RNNKIT_REGISTER_DEVICE(KEY)                         \
  TORCH_LIBRARY_IMPL(rnnkit, KEY, m) {                      \
    m.impl("rnn_layer", &layer_forward);                    \
    m.impl("rnn_layer_backward", &layer_backward);          \
    m.impl("rnn_cell", &cell_forward);                      \
    m.impl("rnn_cell_backward", &cell_backward);            \
  }

RNNKIT_REGISTER_DEVICE(CPU)
#ifdef RNNKIT_WITH_CUDA
RNNKIT_REGISTER_DEVICE(CUDA)
#endif

}  // namespace rnnkit
