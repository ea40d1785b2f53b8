// The Autograd kernels of rnnkit::rnn_layer and rnnkit::rnn_cell, in C++ so
// that a call pays no Python on its way to the engine (a cell step is a few
// microseconds of work; a Python kernel in front of it cost as much again).
//
// How each kind of derivative is taken (the reasons are in rnnkit/ops.py):
//   - nothing records: the engine below autograd;
//   - autograd records: the engine, with a node whose backward is the
//     engine's backward op, run from what forward saved;
//   - that backward itself recorded (create_graph=True): the gradients come
//     from rnnkit's composite of torch ops, through Python;
//   - a torch.func transform or forward-mode AD watches the call: the whole
//     op runs as the composite, through Python.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>

#include <array>
#include <initializer_list>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "python_paths.h"
#include "sequence.h"

namespace rnnkit {

namespace {

namespace py = pybind11;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ---- the Python paths (rnnkit/ops.py hands them over at import) -----------

// Borrowed for the life of the interpreter (never released: they would be
// released after Python has gone).
PyObject* python_path[4] = {nullptr, nullptr, nullptr, nullptr};
enum PythonPath { kLayerComposite, kCellComposite, kLayerGraphGrads, kCellGraphGrads };

// Calls a Python path with C++ arguments and returns its result as a Result,
// everything Python done with the GIL held; a Python exception comes back out
// as itself (torch's python_error carries it across the dispatcher and autograd).
template <class Result, class... Args>
Result call_python(PythonPath which, const Args&... args) {
  TORCH_CHECK(python_path[which] != nullptr, "rnnkit: the Python side of the ops is not loaded; "
              "import rnnkit");
  py::gil_scoped_acquire gil;
  try {
    return py::reinterpret_borrow<py::function>(python_path[which])(args...).template cast<Result>();
  } catch (py::error_already_set& e) {
    e.restore();
    python_error error;
    error.persist();
    throw error;
  }
}

// ---- when the composite must run ---------------------------------------------

// A torch.func transform is active, or a tensor carries a forward-mode tangent:
// the kernels have no jvp and no batching rule, so only the composite's torch
// ops give those derivatives.
bool transformed(std::initializer_list<const OptTensor*> tensors) {
  // functorch includes its back-mode key for as long as any transform's layer
  // is on its stack (its DynamicLayer.h, which says so directly, is not
  // among torch's installed headers).
  if (c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerBackMode)) {
    return true;
  }
  for (const OptTensor* t : tensors) {
    if (t->has_value() && (*t)->defined() && (*t)->_fw_grad(/*level=*/0).defined()) return true;
  }
  return false;
}

bool any_requires_grad(std::initializer_list<const OptTensor*> tensors) {
  for (const OptTensor* t : tensors) {
    if (t->has_value() && (*t)->defined() && (*t)->requires_grad()) return true;
  }
  return false;
}

// ---- the ops, below autograd ---------------------------------------------------

using LayerOutputs = std::tuple<Tensor, Tensor, Tensor, Tensor>;
using CellOutputs = std::tuple<Tensor, Tensor, Tensor>;

const auto& layer_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("rnnkit::rnn_layer", "")
                             .typed<LayerOutputs(const Tensor&, const Tensor&, const OptTensor&,
                                                 const Tensor&, const Tensor&, const OptTensor&,
                                                 const OptTensor&, const OptTensor&, const OptTensor&,
                                                 std::string_view, bool, bool)>();
  return op;
}

const auto& layer_backward_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("rnnkit::rnn_layer_backward", "")
          .typed<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
              const OptTensor&, const OptTensor&, const OptTensor&, const Tensor&, const Tensor&,
              const OptTensor&, const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
              const Tensor&, std::string_view, bool, std::array<bool, 8>)>();
  return op;
}

const auto& cell_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("rnnkit::rnn_cell", "")
                             .typed<CellOutputs(const Tensor&, const Tensor&, const OptTensor&,
                                                const Tensor&, const Tensor&, const OptTensor&,
                                                const OptTensor&, std::string_view, bool)>();
  return op;
}

const auto& cell_backward_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("rnnkit::rnn_cell_backward", "")
          .typed<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
              const OptTensor&, const OptTensor&, const Tensor&, const Tensor&, const OptTensor&,
              const Tensor&, const Tensor&, const Tensor&, std::string_view, std::array<bool, 7>)>();
  return op;
}

c10::DispatchKeySet below_autograd(c10::DispatchKeySet keys) {
  return keys & c10::after_autograd_keyset;
}

OptTensor present(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// Tensors for Python: None where undefined.
std::vector<OptTensor> optional_all(std::initializer_list<Tensor> tensors) {
  std::vector<OptTensor> out;
  for (const Tensor& t : tensors) out.push_back(present(t));
  return out;
}

// ---- what backward is asked for ---------------------------------------------------

// needs_input_grad counts only the tensor arguments that were given; this is
// the same question asked by position among all of them.
template <size_t N>
std::array<bool, N> wanted_gradients(const AutogradContext* ctx, const std::array<bool, N>& given) {
  std::array<bool, N> wanted{};
  size_t edge = 0;
  for (size_t i = 0; i < N; ++i) {
    if (given[i]) wanted[i] = ctx->needs_input_grad(edge++);
  }
  return wanted;
}

// A backward's result: one slot per forward argument: the dispatch keys, the
// tensors' gradients (only those autograd asks for: the engine's others may
// be empty tensors), then `trailing` non-tensor arguments.
template <size_t N>
variable_list per_argument(const std::array<bool, N>& wanted, const variable_list& grads,
                           size_t trailing) {
  variable_list result{Tensor()};
  for (size_t i = 0; i < N; ++i) result.push_back(wanted[i] ? grads[i] : Tensor());
  result.resize(result.size() + trailing);
  return result;
}

// Gradients from Python (None: not wanted), as autograd's outputs.
variable_list gradients_from(const std::vector<OptTensor>& grads) {
  variable_list out;
  for (const OptTensor& g : grads) out.push_back(g.value_or(Tensor()));
  return out;
}

// ---- the layer -------------------------------------------------------------------

struct LayerFunction : torch::autograd::Function<LayerFunction> {
  static variable_list forward(AutogradContext* ctx, c10::DispatchKeySet keys, const Tensor& x,
                               const Tensor& h0, const OptTensor& c0, const Tensor& w_ih,
                               const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                               const OptTensor& w_hr, const OptTensor& lengths,
                               std::string_view mode, bool reverse, bool training) {
    at::AutoDispatchBelowAutograd below;
    auto [y, h_n, c_n, saved] = layer_op().redispatch(below_autograd(keys), x, h0, c0, w_ih, w_hh,
                                                     b_ih, b_hh, w_hr, lengths, mode, reverse, training);
    // Undefined incoming gradients stay undefined: the engine reads them as zeros
    // without the zero tensors autograd would make (saved's among them).
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({saved});
    ctx->save_for_backward({x, h0, c0.value_or(Tensor()), w_ih, w_hh, b_ih.value_or(Tensor()),
                            b_hh.value_or(Tensor()), w_hr.value_or(Tensor()),
                            lengths.value_or(Tensor()), saved});
    ctx->saved_data["mode"] = std::string(mode);
    ctx->saved_data["reverse"] = reverse;
    return {y, h_n, c_n, saved};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const Tensor &x = s[0], &h0 = s[1], &c0 = s[2], &w_ih = s[3], &w_hh = s[4], &b_ih = s[5],
                 &b_hh = s[6], &w_hr = s[7], &lengths = s[8], &saved = s[9];
    const std::string mode = ctx->saved_data["mode"].toStringRef();
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const bool lstm = mode == "LSTM";
    // Of x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr (lengths, given or not, gets none).
    const std::array<bool, 8> wanted = wanted_gradients<8>(
        ctx, {true, true, c0.defined(), true, true, b_ih.defined(), b_hh.defined(), w_hr.defined()});
    variable_list out;
    if (c10::GradMode::is_enabled()) {  // create_graph=True: gradients that have a graph
      out = gradients_from(call_python<std::vector<OptTensor>>(
          kLayerGraphGrads, optional_all({x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr}), wanted,
          optional_all({grads[0], grads[1], lstm ? grads[2] : Tensor()}), present(lengths), mode,
          reverse));
    } else {
      // Below autograd: the backward op's own Autograd kernel only refuses to be recorded.
      at::AutoDispatchBelowAutograd below;
      auto [dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr] = layer_backward_op().call(
          present(grads[0]), present(grads[1]), lstm ? present(grads[2]) : std::nullopt, x, h0,
          present(c0), w_ih, w_hh, present(w_hr), present(lengths), saved, mode, reverse, wanted);
      out = {dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr};
    }
    return per_argument(wanted, out, 4);  // then lengths, mode, reverse, training
  }
};

LayerOutputs layer_autograd(c10::DispatchKeySet keys, const Tensor& x, const Tensor& h0,
                            const OptTensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                            const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
                            const OptTensor& lengths, std::string_view mode, bool reverse,
                            bool training) {
  const OptTensor x_ = x, h0_ = h0, w_ih_ = w_ih, w_hh_ = w_hh;
  if (transformed({&x_, &h0_, &c0, &w_ih_, &w_hh_, &b_ih, &b_hh, &w_hr, &lengths})) {
    return call_python<LayerOutputs>(kLayerComposite, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                      lengths, mode, reverse, training);
  }
  if (c10::GradMode::is_enabled() &&
      any_requires_grad({&x_, &h0_, &c0, &w_ih_, &w_hh_, &b_ih, &b_hh, &w_hr})) {
    const variable_list out = LayerFunction::apply(keys, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                                   lengths, mode, reverse, training);
    return {out[0], out[1], out[2], out[3]};
  }
  at::AutoDispatchBelowAutograd below;
  return layer_op().redispatch(below_autograd(keys), x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                               lengths, mode, reverse, training);
}

// ---- the cell ----------------------------------------------------------------------

struct CellFunction : torch::autograd::Function<CellFunction> {
  static variable_list forward(AutogradContext* ctx, c10::DispatchKeySet keys, const Tensor& x,
                               const Tensor& h, const OptTensor& c, const Tensor& w_ih,
                               const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                               std::string_view mode, bool training) {
    at::AutoDispatchBelowAutograd below;
    auto [h_new, c_new, saved] = cell_op().redispatch(below_autograd(keys), x, h, c, w_ih, w_hh,
                                                     b_ih, b_hh, mode, training);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({saved});
    ctx->save_for_backward({x, h, c.value_or(Tensor()), w_ih, w_hh, b_ih.value_or(Tensor()),
                            b_hh.value_or(Tensor()), saved});
    ctx->saved_data["mode"] = std::string(mode);
    return {h_new, c_new, saved};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const Tensor &x = s[0], &h = s[1], &c = s[2], &w_ih = s[3], &w_hh = s[4], &b_ih = s[5],
                 &b_hh = s[6], &saved = s[7];
    const std::string mode = ctx->saved_data["mode"].toStringRef();
    const bool lstm = mode == "LSTM";
    const std::array<bool, 7> wanted = wanted_gradients<7>(
        ctx, {true, true, c.defined(), true, true, b_ih.defined(), b_hh.defined()});
    variable_list out;
    if (c10::GradMode::is_enabled()) {  // create_graph=True
      out = gradients_from(call_python<std::vector<OptTensor>>(
          kCellGraphGrads, optional_all({x, h, c, w_ih, w_hh, b_ih, b_hh}), wanted,
          optional_all({grads[0], lstm ? grads[1] : Tensor()}), mode));
    } else {
      at::AutoDispatchBelowAutograd below;
      auto [dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh] = cell_backward_op().call(
          present(grads[0]), lstm ? present(grads[1]) : std::nullopt, x, h, present(c), w_ih, w_hh,
          saved, mode, wanted);
      out = {dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh};
    }
    return per_argument(wanted, out, 2);  // then mode, training
  }
};

CellOutputs cell_autograd(c10::DispatchKeySet keys, const Tensor& x, const Tensor& h,
                          const OptTensor& c, const Tensor& w_ih, const Tensor& w_hh,
                          const OptTensor& b_ih, const OptTensor& b_hh, std::string_view mode,
                          bool training) {
  const OptTensor x_ = x, h_ = h, w_ih_ = w_ih, w_hh_ = w_hh;
  const std::initializer_list<const OptTensor*> tensors{&x_, &h_, &c, &w_ih_, &w_hh_, &b_ih, &b_hh};
  if (transformed(tensors)) {
    return call_python<CellOutputs>(kCellComposite, x, h, c, w_ih, w_hh, b_ih, b_hh, mode, training);
  }
  if (c10::GradMode::is_enabled() && any_requires_grad(tensors)) {
    const variable_list out = CellFunction::apply(keys, x, h, c, w_ih, w_hh, b_ih, b_hh, mode, training);
    return {out[0], out[1], out[2]};
  }
  at::AutoDispatchBelowAutograd below;
  return cell_op().redispatch(below_autograd(keys), x, h, c, w_ih, w_hh, b_ih, b_hh, mode, training);
}

TORCH_LIBRARY_IMPL(rnnkit, Autograd, m) {
  m.impl("rnn_layer", TORCH_FN(layer_autograd));
  m.impl("rnn_cell", TORCH_FN(cell_autograd));
}

}  // namespace

PyObject* set_python_paths(PyObject*, PyObject* args) {
  PyObject* paths[4];
  if (!PyArg_ParseTuple(args, "OOOO", &paths[0], &paths[1], &paths[2], &paths[3])) return nullptr;
  for (int i = 0; i < 4; ++i) {
    if (!PyCallable_Check(paths[i])) {
      PyErr_SetString(PyExc_TypeError, "rnnkit: the Python paths must be callables");
      return nullptr;
    }
  }
  for (int i = 0; i < 4; ++i) {
    Py_INCREF(paths[i]);
    Py_XDECREF(python_path[i]);
    python_path[i] = paths[i];
  }
  Py_RETURN_NONE;
}

}  // namespace rnnkit
