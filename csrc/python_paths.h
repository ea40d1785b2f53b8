// The Python functions the C++ Autograd kernels (autograd.cpp) call for what
// the engine's kernels cannot do: the composite under a transform, and
// gradients that themselves have a graph. rnnkit/ops.py hands them over once.
#pragma once

#include <Python.h>

namespace rnnkit {

// _C._set_python_paths(layer_composite, cell_composite, layer_graph_grads,
// cell_graph_grads); see rnnkit/ops.py for their arguments.
PyObject* set_python_paths(PyObject* self, PyObject* args);

}  // namespace rnnkit
