// The modules' forward for the common call, in C++: plain CPU or CUDA tensors
// of one engine dtype, well-formed, no autocast, no Python modes. For a cell
// step or a one-step layer call the checks rnnkit/modules.py makes in Python
// cost more than the step itself; here they cost well under a microsecond.
// Every call this does not take (it returns None) goes on through the Python
// forward, which decides between the engine and torch.nn as before; where
// this takes a call it does what that forward does, op for op.
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

#include "common_call.h"
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
  if (!(PyTuple_Check(hx) || PyList_Check(hx)) || PySequence_Fast_GET_SIZE(hx) != 2) {
    return std::nullopt;
  }
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

// A Python mode would see the call, or have it traced: Python decides.
bool python_modes_active() {
  return c10::impl::TorchDispatchModeTLS::any_modes_set() || at::impl::torch_function_mode_enabled();
}

bool records_grad(const std::vector<const Tensor*>& tensors) {
  if (!torch::autograd::GradMode::is_enabled()) return false;
  for (const Tensor* t : tensors) {
    if (t->requires_grad()) return true;
  }
  return false;
}

const auto& layer_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("rnnkit::rnn_layer", "")
                             .typed<std::tuple<Tensor, Tensor, Tensor, Tensor>(
                                 const Tensor&, const Tensor&, const OptTensor&, const Tensor&,
                                 const Tensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                                 const OptTensor&, std::string_view, bool, bool)>();
  return op;
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

// A new Python tuple (a, b).
PyObject* pair_of(Tensor a, Tensor b) {
  PyObject* pair = PyTuple_New(2);
  if (pair == nullptr) return nullptr;
  PyTuple_SET_ITEM(pair, 0, THPVariable_Wrap(std::move(a)));
  PyTuple_SET_ITEM(pair, 1, THPVariable_Wrap(std::move(b)));
  return pair;
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
  if (python_modes_active()) Py_RETURN_NONE;
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
  const bool training = records_grad(tensors);
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
  return pair_of(std::move(h_new), std::move(c_new));
  END_HANDLE_TH_ERRORS
}

PyObject* sequence_call(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  const char* mode_name;
  PyObject *input_obj, *hx_obj, *table, *all_weights;
  long long input_size, hidden_size, proj_size, num_layers;
  int bidirectional, batch_first, bias, dropout_on;
  if (!PyArg_ParseTuple(args, "sOOOOLLLLpppp", &mode_name, &input_obj, &hx_obj, &table, &all_weights,
                        &input_size, &hidden_size, &proj_size, &num_layers, &bidirectional,
                        &batch_first, &bias, &dropout_on)) {
    return nullptr;
  }
  const std::string_view mode(mode_name);
  const bool lstm = mode == "LSTM";
  // Dropout between layers draws random numbers in Python's order there.
  if (python_modes_active() || (dropout_on && num_layers > 1)) Py_RETURN_NONE;
  const std::optional<Tensor> input = plain_tensor(input_obj);
  if (!input || !(input->dim() == 2 || input->dim() == 3) || input->size(-1) != input_size) {
    Py_RETURN_NONE;
  }
  const bool batched = input->dim() == 3;
  Tensor x = batched ? *input : input->unsqueeze(batch_first ? 0 : 1);
  if (batch_first) x = x.transpose(0, 1);
  const int64_t steps = x.size(0), batch = x.size(1);
  if (steps == 0) Py_RETURN_NONE;

  const int64_t directions = bidirectional ? 2 : 1, P = proj_size > 0 ? proj_size : hidden_size;
  std::optional<std::vector<Tensor>> states = states_of(hx_obj, lstm);
  if (!states) Py_RETURN_NONE;
  const std::vector<int64_t> h_shape{num_layers * directions, batch, P};
  const std::vector<int64_t> c_shape{num_layers * directions, batch, hidden_size};
  for (size_t i = 0; i < states->size(); ++i) {
    Tensor& s = (*states)[i];
    if (s.dim() != (batched ? 3 : 2)) Py_RETURN_NONE;
    if (!batched) s = s.unsqueeze(1);
    if (s.sizes() != at::IntArrayRef(i == 0 ? h_shape : c_shape)) Py_RETURN_NONE;
  }

  // Each layer-direction's weights in torch.nn's order: w_ih, w_hh[, b_ih, b_hh][, w_hr].
  const Py_ssize_t count = PyList_Check(all_weights) ? PyList_GET_SIZE(all_weights) : -1;
  if (count != num_layers * directions) Py_RETURN_NONE;
  std::vector<std::vector<Tensor>> weights(count);
  std::vector<const Tensor*> tensors{&x};
  for (const Tensor& s : *states) tensors.push_back(&s);
  for (Py_ssize_t k = 0; k < count; ++k) {
    PyObject* names = PyList_GET_ITEM(all_weights, k);
    if (!PyList_Check(names) || !PyDict_Check(table)) Py_RETURN_NONE;
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(names); ++j) {
      PyObject* p = PyDict_GetItem(table, PyList_GET_ITEM(names, j));
      std::optional<Tensor> w = p ? plain_tensor(p) : std::nullopt;
      if (!w) Py_RETURN_NONE;
      weights[k].push_back(*w);
    }
    if (weights[k].size() != size_t(2 + (bias ? 2 : 0) + (proj_size > 0 ? 1 : 0))) Py_RETURN_NONE;
  }
  for (const std::vector<Tensor>& ws : weights) {
    for (const Tensor& w : ws) tensors.push_back(&w);
  }
  if (states->empty()) {
    states->push_back(at::zeros(h_shape, x.options()));
    if (lstm) states->push_back(at::zeros(c_shape, x.options()));
  }
  if (!engine_takes(tensors)) Py_RETURN_NONE;

  Tensor y;
  std::vector<Tensor> h_n, c_n;
  {
    pybind11::gil_scoped_release no_gil;
    const Tensor& h0 = (*states)[0];
    for (int64_t layer = 0; layer < num_layers; ++layer) {
      std::vector<Tensor> outputs;
      for (int64_t direction = 0; direction < directions; ++direction) {
        const int64_t k = layer * directions + direction;
        const std::vector<Tensor>& w = weights[k];
        const Tensor h0_k = h0[k];
        const OptTensor c0_k = lstm ? OptTensor((*states)[1][k]) : std::nullopt;
        const OptTensor b_ih = bias ? OptTensor(w[2]) : std::nullopt;
        const OptTensor b_hh = bias ? OptTensor(w[3]) : std::nullopt;
        const OptTensor w_hr = proj_size > 0 ? OptTensor(w.back()) : std::nullopt;
        std::vector<const Tensor*> used{&x, &h0_k, &w[0], &w[1]};
        for (const OptTensor* t : {&c0_k, &b_ih, &b_hh, &w_hr}) {
          if (t->has_value()) used.push_back(&**t);
        }
        auto [y_k, h_k, c_k, saved] = layer_op().call(x, h0_k, c0_k, w[0], w[1], b_ih, b_hh, w_hr,
                                                      std::nullopt, mode, direction == 1,
                                                      records_grad(used));
        outputs.push_back(y_k);
        h_n.push_back(h_k);
        c_n.push_back(c_k);
      }
      x = directions == 1 ? outputs[0] : at::cat(outputs, -1);
    }
    y = batch_first ? x.transpose(0, 1) : x;
  }
  Tensor h_final = at::stack(h_n), c_final = lstm ? at::stack(c_n) : Tensor();
  if (!batched) {
    y = y.squeeze(batch_first ? 0 : 1);
    h_final = h_final.squeeze(1);
    if (lstm) c_final = c_final.squeeze(1);
  }
  PyObject* state = lstm ? pair_of(std::move(h_final), std::move(c_final))
                         : THPVariable_Wrap(std::move(h_final));
  if (state == nullptr) return nullptr;
  PyObject* out = PyTuple_New(2);
  if (out == nullptr) {
    Py_DECREF(state);
    return nullptr;
  }
  PyTuple_SET_ITEM(out, 0, THPVariable_Wrap(std::move(y)));
  PyTuple_SET_ITEM(out, 1, state);
  return out;
  END_HANDLE_TH_ERRORS
}

}  // namespace rnnkit
