// The CUDA launcher of the persistent strategies: the entry points of
// csrc/persistent/launch.h (persistent_kernels.cu) on PyTorch's current
// stream, no host sync (so the op can be captured in a CUDA graph) except
// when a test asks for the watchdog to be read.
#include <ATen/Context.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <map>
#include <mutex>

#include "../persistent/launch.h"
#include "persistent_cuda.h"

namespace rnnkit {
namespace {

class CudaPersistentLauncher final : public PersistentLauncher {
 public:
  int device() const override { return c10::cuda::current_device(); }

  persistent::DeviceInfo info(int device) const override {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = devices_.find(device);
    if (found != devices_.end()) return found->second;
    persistent::DeviceInfo info;
    const persistent::Status s = persistent::device_info(device, &info);
    TORCH_CHECK(s.ok(), "rnnkit: reading the properties of CUDA device ", device, ": ", s.message);
    return devices_.emplace(device, info).first->second;
  }

  bool allow_tf32() const override { return at::globalContext().allowTF32CuBLAS(); }

  persistent::Status launch(const persistent::Plan& plan, const persistent::ForwardArgs& args,
                             const at::Tensor& workspace) const override {
    return persistent::forward(plan, args, workspace.data_ptr(), workspace.numel(),
                               c10::cuda::getCurrentCUDAStream());
  }

  persistent::Status launch(const persistent::Plan& plan, const persistent::BackwardArgs& args,
                              const at::Tensor& workspace) const override {
    return persistent::backward(plan, args, workspace.data_ptr(), workspace.numel(),
                                c10::cuda::getCurrentCUDAStream());
  }

  // Waits for the launch; not while the stream is being captured, where
  // nothing has run yet and waiting is not allowed.
  persistent::Status watchdog(const persistent::Plan& plan, const at::Tensor& workspace) const override {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capturing) == cudaSuccess && capturing != cudaStreamCaptureStatusNone)
      return persistent::Status{};
    return persistent::read_watchdog(plan, workspace.data_ptr(), stream);
  }

 private:
  mutable std::mutex mutex_;
  mutable std::map<int, persistent::DeviceInfo> devices_;
};

}  // namespace

std::shared_ptr<const PersistentLauncher> cuda_persistent_launcher() {
  return std::make_shared<CudaPersistentLauncher>();
}

}  // namespace rnnkit
