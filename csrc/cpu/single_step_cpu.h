// "single_step": a layer of one step (cells, and a T = 1 call: decoding one
// step at a time, WaveRNN-style sampling, RL policies), where the fixed cost
// of a call is the cost: both products without packing (dot products on the
// weights as they stand for a row or few, brgemm on weights transposed once
// and kept while unchanged for more), on one thread where the product is
// small, then one pass of the cell; nothing allocated but the outputs and
// the two gate buffers.
#pragma once

#include "../strategy.h"

namespace rnnkit {

std::unique_ptr<Strategy> make_single_step();

}  // namespace rnnkit
