// rnnkit._C: loading it registers the ops (TORCH_LIBRARY in ops.cpp) and the
// strategies. The module itself tells Python how it was built and gives it
// the planner's controls (rnnkit/planner.py wraps them) and the cell facts.
#include <Python.h>

#include <c10/core/Device.h>

#include <exception>
#include <string>
#include <vector>

#include "common_call.h"
#include "cell_units.h"
#include "checks.h"
#include "cpu/lstm_row_avx512.h"
#include "persistent_strategy.h"
#include "python_paths.h"
#include "strategy.h"

namespace {

using namespace rnnkit;

// Runs fn, turning a C++ exception into a Python ValueError.
template <class Fn>
PyObject* guarded(const Fn& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
}

PyObject* string_list(const std::vector<std::string>& names) {
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(names.size()));
  for (size_t i = 0; list && i < names.size(); ++i)
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), PyUnicode_FromString(names[i].c_str()));
  return list;
}

PyObject* built_with_cuda(PyObject*, PyObject*) {
#ifdef RNNKIT_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyObject* strategies(PyObject*, PyObject* args) {
  const char* device;
  if (!PyArg_ParseTuple(args, "s", &device)) return nullptr;
  return guarded([&] { return string_list(strategy_names(c10::Device(device).type())); });
}

PyObject* force(PyObject*, PyObject* args) {
  const char* name = nullptr;
  if (!PyArg_ParseTuple(args, "z", &name)) return nullptr;
  force_strategy(name ? std::optional<std::string>(name) : std::nullopt);
  Py_RETURN_NONE;
}

PyObject* forced(PyObject*, PyObject*) {
  const std::optional<std::string> name = forced_strategy();
  if (!name) Py_RETURN_NONE;
  return PyUnicode_FromString(name->c_str());
}

PyObject* record(PyObject*, PyObject* args) {
  int on;
  if (!PyArg_ParseTuple(args, "p", &on)) return nullptr;
  record_strategies(on != 0);
  Py_RETURN_NONE;
}

PyObject* take_record(PyObject*, PyObject*) { return string_list(take_recorded()); }

PyObject* measured(PyObject*, PyObject*) { return string_list(measurements()); }

PyObject* forget(PyObject*, PyObject*) {
  forget_measurements();
  Py_RETURN_NONE;
}

PyObject* persistent_watchdog(PyObject*, PyObject* args) {
  long long cycles;
  if (!PyArg_ParseTuple(args, "L", &cycles)) return nullptr;
  return guarded([&] { return PyLong_FromLongLong(set_persistent_watchdog(cycles)); });
}

PyObject* saved_width_of(PyObject*, PyObject* args) {
  const char* mode;
  long long hidden, proj;
  if (!PyArg_ParseTuple(args, "sLL", &mode, &hidden, &proj)) return nullptr;
  return guarded([&] { return PyLong_FromLongLong(saved_width(parse_mode(mode), hidden, proj)); });
}

PyObject* gates_of(PyObject*, PyObject* args) {
  const char* mode;
  if (!PyArg_ParseTuple(args, "s", &mode)) return nullptr;
  return guarded([&] { return PyLong_FromLong(gate_count(parse_mode(mode))); });
}

PyObject* lstm_avx512_error(PyObject*, PyObject* args) {
  long long n;
  unsigned int seed;
  if (!PyArg_ParseTuple(args, "LI", &n, &seed)) return nullptr;
  return PyFloat_FromDouble(lstm_forward_units_avx512_max_error(n, seed));
}

PyMethodDef methods[] = {
    {"built_with_cuda", built_with_cuda, METH_NOARGS, "True if the CUDA kernels were compiled."},
    {"strategies", strategies, METH_VARARGS, "The strategies of a device ('cpu', 'cuda'), in the planner's order."},
    {"_force_strategy", force, METH_VARARGS, "Forces a strategy by name, process-wide (None: the planner's choice)."},
    {"_forced_strategy", forced, METH_NOARGS, "The strategy forced from Python, or None."},
    {"_record_strategies", record, METH_VARARGS, "Turns recording of the strategies that run on or off."},
    {"_take_recorded", take_record, METH_NOARGS, "The names recorded since the last call, cleared."},
    {"_measurements", measured, METH_NOARGS, "What the planner timed: one line per shape (times and choice)."},
    {"_forget_measurements", forget, METH_NOARGS, "Forgets what the planner timed."},
    {"_persistent_watchdog", persistent_watchdog, METH_VARARGS,
     "Sets the persistent kernels' GRID barrier budget in SM cycles (0: their default, unchecked); a budget "
     "set here makes every GRID launch wait and raise if its watchdog tripped. Returns the previous budget."},
    {"saved_width", saved_width_of, METH_VARARGS, "Values kept per row and step for backward: (mode, hidden, width of h)."},
    {"gate_count", gates_of, METH_VARARGS, "Gate rows per hidden unit of a mode."},
    {"_lstm_avx512_max_error", lstm_avx512_error, METH_VARARGS,
     "Largest difference of the AVX-512 LSTM units from the generic ones (n, seed); -1 without AVX-512."},
    {"_cell_call", cell_call, METH_VARARGS,
     "A cell's forward for the common call: (mode, input, hx, parameters, input_size, hidden_size) -> "
     "the new state(s), or None where Python must decide."},
    {"_sequence_call", sequence_call, METH_VARARGS,
     "A sequence module's forward for the common call (see common_call.h), or None where Python "
     "must decide."},
    {"_set_python_paths", set_python_paths, METH_VARARGS,
     "Hands the C++ Autograd kernels their Python paths (rnnkit/ops.py does, at import)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "rnnkit's compiled engine", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
