#include "cell_bias.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "cell_units.h"

namespace rnnkit {

// Summed in a plain loop where the biases live on the host: a call of one
// step pays for every tensor operation; elsewhere with tensor operations.
at::Tensor cell_bias(CellKind kind, int64_t H, const std::optional<at::Tensor>& b_ih,
                     const std::optional<at::Tensor>& b_hh, bool gx_has_b_ih,
                     const at::TensorOptions& opts) {
  const int64_t G = gate_count(kind) * H;
  const bool add_ih = b_ih.has_value() && !gx_has_b_ih;
  // Where b_in goes: GRU's n gate keeps it apart; the others add it to the gate.
  const int64_t together = kind == CellKind::GRU ? 2 * H : G;
  at::Tensor bias = at::empty({cell_bias_width(kind, H)}, opts);
  if (opts.device().is_cpu()) {
    const at::Tensor hh = b_hh.has_value() ? b_hh->contiguous() : at::Tensor();
    const at::Tensor ih = add_ih ? b_ih->contiguous() : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, bias.scalar_type(), "rnnkit_cell_bias", [&] {
      using A = at::opmath_type<scalar_t>;
      scalar_t* out = bias.data_ptr<scalar_t>();
      const scalar_t* hh_p = hh.defined() ? hh.data_ptr<scalar_t>() : nullptr;
      const scalar_t* ih_p = ih.defined() ? ih.data_ptr<scalar_t>() : nullptr;
      for (int64_t g = 0; g < G; ++g) {
        const A sum = (hh_p ? A(hh_p[g]) : A(0)) + (ih_p && g < together ? A(ih_p[g]) : A(0));
        out[g] = scalar_t(sum);
      }
      for (int64_t j = G; j < bias.numel(); ++j) out[j] = ih_p ? ih_p[2 * H + (j - G)] : scalar_t(0);
    });
    return bias;
  }
  bias.zero_();
  at::Tensor gates = bias.narrow(0, 0, G);
  if (b_hh.has_value()) gates.copy_(*b_hh);
  if (add_ih) {
    gates.narrow(0, 0, together).add_(b_ih->narrow(0, 0, together));
    if (kind == CellKind::GRU) bias.narrow(0, G, H).copy_(b_ih->narrow(0, 2 * H, H));
  }
  return bias;
}

}  // namespace rnnkit
