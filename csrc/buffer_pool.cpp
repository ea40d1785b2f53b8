#include "buffer_pool.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

namespace rnnkit {
namespace {

constexpr size_t kPooledBytes = size_t(1) << 20;  // smaller ones malloc keeps well itself
constexpr size_t kAlignment = 64;                  // a cache line

// Freed blocks by size. Never destroyed: tensors may be freed after static
// destructors have run, at interpreter exit.
class Pool {
 public:
  void* take(size_t& bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // The smallest free block that fits, if it is not much larger.
      auto it = free_.lower_bound(bytes);
      if (it != free_.end() && it->first <= bytes + bytes / 2) {
        bytes = it->first;
        void* block = it->second;
        cached_ -= it->first;
        free_.erase(it);
        return block;
      }
    }
    bytes = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* block = std::aligned_alloc(kAlignment, bytes);
    TORCH_CHECK(block != nullptr, "rnnkit: out of memory allocating ", bytes, " bytes");
    return block;
  }

  void give_back(void* block, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + bytes <= buffer_cache_limit()) {
        free_.emplace(bytes, block);
        cached_ += bytes;
        return;
      }
    }
    std::free(block);
  }

 private:
  std::mutex mutex_;
  std::multimap<size_t, void*> free_;
  size_t cached_ = 0;
};

Pool& pool() {
  static Pool* const instance = new Pool();
  return *instance;
}

struct Block {
  void* data;
  size_t bytes;
};

void release(void* context) {
  Block* block = static_cast<Block*>(context);
  pool().give_back(block->data, block->bytes);
  delete block;
}

}  // namespace

size_t buffer_cache_limit() {
  static const size_t limit = [] {
    const char* text = std::getenv("RNNKIT_CPU_BUFFER_CACHE_MB");
    if (text == nullptr || *text == '\0') return size_t(1024) << 20;
    char* end = nullptr;
    const long long mb = std::strtoll(text, &end, 10);
    TORCH_CHECK_VALUE(end != text && *end == '\0' && mb >= 0, "rnnkit: RNNKIT_CPU_BUFFER_CACHE_MB must be a "
                      "whole number of megabytes (0: keep none), got '", text, "'");
    return size_t(mb) << 20;
  }();
  return limit;
}

at::Tensor scratch_buffer(at::IntArrayRef shape, const at::TensorOptions& opts, bool zeroed) {
  const size_t bytes = size_t(c10::multiply_integers(shape)) * opts.dtype().itemsize();
  if (!opts.device().is_cpu() || bytes < kPooledBytes || buffer_cache_limit() == 0) {
    return zeroed ? at::zeros(shape, opts) : at::empty(shape, opts);
  }
  size_t taken = bytes;
  void* data = pool().take(taken);
  Block* block = new Block{data, taken};
  at::Tensor t = at::from_blob(data, shape, [block](void*) { release(block); }, opts);
  return zeroed ? t.zero_() : t;
}

}  // namespace rnnkit
