// The modules' forward for the common call, in C++ (common_call.cpp).
#pragma once

#include <Python.h>

namespace rnnkit {

// _C._cell_call(mode, input, hx, parameter_table, input_size, hidden_size):
// the new h (h' and c' for the LSTM) as torch.nn's cell returns them, or
// None where the call is not the common one and Python must decide.
PyObject* cell_call(PyObject* self, PyObject* args);

// _C._sequence_call(mode, input, hx, parameter_table, all_weights, input_size,
// hidden_size, proj_size, num_layers, bidirectional, batch_first, bias,
// dropout_on): (output, h_n) or (output, (h_n, c_n)) for a tensor input, as
// torch.nn's RNN/GRU/LSTM return them, or None where Python must decide.
PyObject* sequence_call(PyObject* self, PyObject* args);

}  // namespace rnnkit
