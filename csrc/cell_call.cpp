// The cells' forward for the common call, in C++: plain CPU or CUDA tensors
// of one engine dtype, well-formed, no autocast, no Python modes. For a cell
// step the checks rnnkit/modules.py makes in Python cost more than the step
// itself; here they cost well under a microsecond. Every call this does not
// take (it returns None) goes on through the Python forward, which decides
// between the engine and torch.nn as before, so the two always agree.
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/python_variable.h>

#include <optional>
#include <string_view>
#include <tuple>
#include <vector>

#include "cell_call.h"
#include "sequence.h"

namespace rnnkit {

namespace {

// A plain tensor (not a subclass, which may have its own dispatch) or nullopt.
std::optional<Tensor> plain_tensor(PyObject* obj) {
  if (!THPVariable_CheckExact(obj)) return std::nullopt;
  return THPVariable_Unpack(obj);
}

// The call's states from hx: None, one tensor, or for the LSTM a pair; empty
// where hx is none of those.
std::optional<std::vector<Tensor>> states_of(PyObject* hx, bool lstm) {
  std::vector<Tensor> states;
  if (hx == Py_None) return states;
  if (!lstm) {
    std::optional<Tensor> h = plain_tensor(hx);
    if (!h) return std::nullopt;
    states.push_back(*h);
    return states;
  }
  if (!(PyTuple_Check(hx) || PyList_Check(hx)) || PySequence_Fast_GET_SIZE(hx) != 2) return std::nullopt;
  for (Py_ssize_t i = 0; i < 2; ++i) {
    std::optional<Tensor> s = plain_tensor(PySequence_Fast_GET_ITEM(hx, i));
    if (!s) return std::nullopt;
    states.push_back(*s);
  }
  return states;
}

// weight_ih, weight_hh, bias_ih, bias_hh from the module's parameter table
// (a bias may be None); empty where one is missing (a parametrization moves it).
std::optional<std::vector<std::optional<Tensor>>> parameters_of(PyObject* table) {
  std::vector<std::optional<Tensor>> params;
  if (!PyDict_Check(table)) return std::nullopt;
  for (const char* name : {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}) {
    PyObject* p = PyDict_GetItemString(table, name);
    if (p == nullptr) return std::nullopt;
    if (p == Py_None && name[0] == 'b') {
      params.emplace_back();
      continue;
    }
    std::optional<Tensor> t = plain_tensor(p);
    if (!t) return std::nullopt;
    params.push_back(*t);
  }
  return params;
}

// Whether the engine runs these tensors as torch.nn would: one device it has
// kernels for, one dtype it has kernels for, and no autocast there.
bool engine_takes(const std::vector<const Tensor*>& tensors) {
  const Tensor& x = *tensors[0];
  const c10::Device device = x.device();
  if (!(device.is_cpu() || device.is_cuda()) || at::autocast::is_autocast_enabled(device.type())) {
    return false;
  }
  const at::ScalarType dtype = x.scalar_type();
  if (!(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16)) {
    return false;
  }
  for (const Tensor* t : tensors) {
    if (t->scalar_type() != dtype || t->device() != device) return false;
  }
  return true;
}

const auto& cell_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("rnnkit::rnn_cell", "")
                             .typed<std::tuple<Tensor, Tensor, Tensor>(
                                 const Tensor&, const Tensor&, const OptTensor&, const Tensor&,
                                 const Tensor&, const OptTensor&, const OptTensor&,
                                 std::string_view, bool)>();
  return op;
}

}  // namespace

PyObject* cell_call(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  const char* mode_name;
  PyObject *input_obj, *hx_obj, *table;
  long long input_size, hidden_size;
  if (!PyArg_ParseTuple(args, "sOOOLL", &mode_name, &input_obj, &hx_obj, &table, &input_size,
                        &hidden_size)) {
    return nullptr;
  }
  const std::string_view mode(mode_name);
  const bool lstm = mode == "LSTM";
  if (c10::impl::TorchDispatchModeTLS::any_modes_set() || at::impl::torch_function_mode_enabled()) {
    Py_RETURN_NONE;
  }
  const std::optional<Tensor> input = plain_tensor(input_obj);
  if (!input || !(input->dim() == 1 || input->dim() == 2) || hidden_size <= 0 ||
      input->size(-1) != input_size) {
    Py_RETURN_NONE;
  }
  std::optional<std::vector<Tensor>> states = states_of(hx_obj, lstm);
  const std::optional<std::vector<std::optional<Tensor>>> params = parameters_of(table);
  if (!states || !params) Py_RETURN_NONE;

  const bool batched = input->dim() == 2;
  const int64_t batch = batched ? input->size(0) : 1;
  std::vector<const Tensor*> tensors{&*input};
  for (const Tensor& s : *states) {
    if (s.dim() != input->dim() || s.size(-1) != hidden_size || (batched && s.size(0) != batch)) {
      Py_RETURN_NONE;
    }
    tensors.push_back(&s);
  }
  for (const std::optional<Tensor>& p : *params) {
    if (p) tensors.push_back(&*p);
  }
  if (!engine_takes(tensors)) Py_RETURN_NONE;

  const Tensor x = batched ? *input : input->unsqueeze(0);
  if (states->empty()) {
    for (int i = 0; i < (lstm ? 2 : 1); ++i) states->push_back(at::zeros({batch, hidden_size}, x.options()));
  } else if (!batched) {
    for (Tensor& s : *states) s = s.unsqueeze(0);
  }
  const std::optional<Tensor>& b_ih = (*params)[2];
  const std::optional<Tensor>& b_hh = (*params)[3];
  bool training = false;
  if (torch::autograd::GradMode::is_enabled()) {
    for (const Tensor* t : tensors) training = training || t->requires_grad();
  }
  Tensor h_new, c_new, saved;
  {
    pybind11::gil_scoped_release no_gil;  // as torch's own calls do
    std::tie(h_new, c_new, saved) =
        cell_op().call(x, (*states)[0], lstm ? OptTensor((*states)[1]) : std::nullopt, *(*params)[0],
                       *(*params)[1], b_ih, b_hh, mode, training);
  }
  if (!batched) {
    h_new = h_new.squeeze(0);
    if (lstm) c_new = c_new.squeeze(0);
  }
  if (!lstm) return THPVariable_Wrap(std::move(h_new));
  PyObject* pair = PyTuple_New(2);
  if (pair == nullptr) return nullptr;
  PyTuple_SET_ITEM(pair, 0, THPVariable_Wrap(std::move(h_new)));
  PyTuple_SET_ITEM(pair, 1, THPVariable_Wrap(std::move(c_new)));
  return pair;
  END_HANDLE_TH_ERRORS
}

}  // namespace rnnkit
