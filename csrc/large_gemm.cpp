#include "large_gemm.h"

#include <array>

namespace rnnkit {
namespace {

std::array<DeviceGemm, static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>&
registry() {
  static std::array<DeviceGemm, static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>
      gemms{};
  return gemms;
}

}  // namespace

void register_large_gemm(c10::DeviceType device, DeviceGemm gemm) {
  registry()[static_cast<size_t>(device)] = gemm;
}

at::Tensor large_gemm(const at::Tensor& a, const at::Tensor& b) {
  if (DeviceGemm own = registry()[static_cast<size_t>(a.device().type())]) {
    at::Tensor out = own(a, b);
    if (out.defined()) return out;
  }
  return at::mm(a, b);
}

}  // namespace rnnkit
