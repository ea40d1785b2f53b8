// Turns a device's four dtype-templated step kernels into the StepKernels the
// driver looks up, registered when the library loads. Used by cpu/ and cuda/.
#pragma once

#include <ATen/Dispatch.h>

#include "step.h"

#define RNNKIT_DISPATCH_STEP(fn, arg)                                                      \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, (arg).shape.dtype, #fn, \
                                  [&] { fn<scalar_t>(arg); })

// GEMM, FORWARD_LOOP, BACKWARD_LOOP: functions taking const StepGemm& /
// const ForwardLoop& / const BackwardLoop&, or nullptr.
#define RNNKIT_REGISTER_STEP_KERNELS(DEVICE, FORWARD, PROJECT, BACKWARD, PROJECT_BACKWARD, GEMM, \
                                     FORWARD_LOOP, BACKWARD_LOOP)                               \
  const StepKernels k##DEVICE##StepKernels{                                                \
      [](const ForwardStep& a) { RNNKIT_DISPATCH_STEP(FORWARD, a); },                      \
      [](const ProjectStep& a) { RNNKIT_DISPATCH_STEP(PROJECT, a); },                      \
      [](const BackwardStep& a) { RNNKIT_DISPATCH_STEP(BACKWARD, a); },                    \
      [](const ProjectBackwardStep& a) { RNNKIT_DISPATCH_STEP(PROJECT_BACKWARD, a); },     \
      GEMM, FORWARD_LOOP, BACKWARD_LOOP};                                                  \
  const bool k##DEVICE##Registered =                                                        \
      (register_step_kernels(c10::DeviceType::DEVICE, &k##DEVICE##StepKernels), true);
