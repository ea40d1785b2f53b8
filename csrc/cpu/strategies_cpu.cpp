// The CPU's strategies, in the order the planner tries them.
#include "../step_loop.h"
#include "cuda_emulated.h"
#include "fused_loop_cpu.h"
#include "single_step_cpu.h"
#include "step_cpu.h"
#include "torch_native.h"

namespace rnnkit {
namespace {

const bool registered = [] {
  Strategies list;
  list.push_back(make_single_step());
  list.push_back(make_fused_loop(/*projects_input=*/true));
  list.push_back(make_fused_loop(/*projects_input=*/false));
  // The step loop adds b_ih in the cell: addmm would first copy the bias
  // into every row of its T*B*G output.
  list.push_back(make_step_loop(make_cpu_step_kernels(), InputGemm::kWithoutBias));
  // torch.nn's own LSTM (oneDNN), for inference: a candidate of the measurements only.
  list.push_back(make_torch_native());
  // The CUDA step kernels run thread by thread: only when forced (tests).
  list.push_back(make_cuda_emulated_step_loop());
  register_strategies(c10::DeviceType::CPU, std::move(list), /*measure=*/true);
  return true;
}();

}  // namespace
}  // namespace rnnkit
