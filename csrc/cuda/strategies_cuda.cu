// The CUDA strategies, in the order the planner tries them (no measuring:
// the rules decide):
//   persistent            one launch for the whole time loop, W_hh on chip,
//                         wherever its planner finds a plan (not float64, no
//                         projection, W_hh fits the SMs' shared memory); its
//                         cost model picks the group kind
//   persistent_block, persistent_cluster, persistent_grid
//                         the same with one group kind forced: only when
//                         forced (tests, benchmarks)
//   step_loop             everything else: cuBLAS + one pointwise kernel a step
// Registering touches no device: plans and device properties come at the
// first call on a device.
#include "persistent_cuda.h"
#include "step_cuda.h"

namespace rnnkit {
namespace {

const bool registered = [] {
  Strategies list = make_persistent_strategies("persistent", "", cuda_persistent_launcher(),
                                               make_cuda_step_loop(), /*by_rules=*/true);
  list.push_back(make_cuda_step_loop());
  register_strategies(c10::DeviceType::CUDA, std::move(list), /*measure=*/false);
  return true;
}();

}  // namespace
}  // namespace rnnkit
