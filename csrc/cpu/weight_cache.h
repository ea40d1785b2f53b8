// Weights transposed once and kept while they stay unchanged: a model that
// runs one step at a time (decoding, sampling) multiplies by the same weights
// on every call, and brgemm wants them as (K, N). An entry holds while its
// weight tensor lives, with the same version counter and the same values: the
// values are compared with a copy on every use, because a write through
// `param.data` (soft target updates in RL code) changes them without a
// version bump, and a stale transpose would be a silently wrong answer.
#pragma once

#include <ATen/ATen.h>

namespace rnnkit {

// W^T (K, N) contiguous for a (N, K) float32 weight, from the cache or made
// now; an undefined tensor where W cannot be kept (an inference tensor, which
// has no version counter to tell a change).
at::Tensor cached_transpose(const at::Tensor& weight);

}  // namespace rnnkit
