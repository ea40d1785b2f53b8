// The cells' forward for the common call, in C++ (cell_call.cpp).
#pragma once

#include <Python.h>

namespace rnnkit {

// _C._cell_call(mode, input, hx, parameter_table, input_size, hidden_size):
// the new h (h' and c' for the LSTM) as torch.nn's cell returns them, or
// None where the call is not the common one and Python must decide.
PyObject* cell_call(PyObject* self, PyObject* args);

}  // namespace rnnkit
