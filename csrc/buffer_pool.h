// Large CPU buffers the engine uses inside a pass or hands from forward to
// backward (what training keeps, the gate gradients), kept for reuse when
// freed. Fresh memory of that size comes from the kernel page by page, and
// touching it the first time costs ten times a pass over memory already
// mapped: a 39 MB buffer took 10.5 ms to allocate and fill, 1 ms to refill.
#pragma once

#include <ATen/ATen.h>

namespace rnnkit {

// An uninitialised (zeroed: zeros) tensor of the given shape: for a CPU
// tensor of at least a mebibyte, on memory freed by an earlier such buffer
// where one fits. Its storage cannot be resized: for the engine's own
// buffers, not for what a user is handed as a result.
at::Tensor scratch_buffer(at::IntArrayRef shape, const at::TensorOptions& opts, bool zeroed);

// How many bytes the pool may keep while no tensor uses them
// (RNNKIT_CPU_BUFFER_CACHE_MB, default 1024; 0 keeps none).
size_t buffer_cache_limit();

}  // namespace rnnkit
