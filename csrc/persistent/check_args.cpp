#include "check_args.h"

#include <cstdint>

namespace rnnkit {
namespace persistent {

namespace {

Status invalid(const char* what, int dir) {
  return make_status(StatusCode::INVALID_ARGUMENT, "persistent kernel: %s (direction %d)", what, dir);
}

// What both passes share: the plan applies to this pass, shapes and types
// agree, the workspace is there.
Status check_common(const Plan& plan, Pass pass, CellKind cell, DType dtype, int64_t T, int64_t B,
                    int64_t H, int32_t dirs, int64_t watchdog_cycles, const void* workspace,
                    int64_t workspace_bytes) {
  if (!plan.applies) return make_status(StatusCode::DOES_NOT_APPLY, "%s", plan.reason);
  const Geometry& g = plan.geo;
  if (g.pass != pass)
    return make_status(StatusCode::INVALID_ARGUMENT, "persistent kernel: a %s plan given to the %s pass",
                       g.pass == Pass::FORWARD ? "forward" : "backward",
                       pass == Pass::FORWARD ? "forward" : "backward");
  if (cell != g.cell || dtype != g.dtype || B != g.B || H != g.H || dirs != g.dirs)
    return make_status(StatusCode::INVALID_ARGUMENT,
                       "persistent kernel: arguments (cell %d, %s, B=%lld, H=%lld, %d directions) differ "
                       "from the plan's (cell %d, %s, B=%lld, H=%lld, %d directions)",
                       int(cell), dtype_name(dtype), (long long)B, (long long)H, dirs, int(g.cell),
                       dtype_name(g.dtype), (long long)g.B, (long long)g.H, g.dirs);
  if (T < 0) return make_status(StatusCode::INVALID_ARGUMENT, "persistent kernel: T = %lld < 0", (long long)T);
  if (watchdog_cycles < 0)
    return make_status(StatusCode::INVALID_ARGUMENT, "persistent kernel: negative watchdog_cycles");
  if (workspace == nullptr || workspace_bytes < g.workspace_bytes)
    return make_status(StatusCode::INVALID_ARGUMENT,
                       "persistent kernel: the workspace needs %lld bytes, got %lld%s",
                       (long long)g.workspace_bytes, (long long)workspace_bytes,
                       workspace ? "" : " (null)");
  if (reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    return make_status(StatusCode::INVALID_ARGUMENT, "persistent kernel: the workspace is not 16-byte aligned");
  return Status{};
}

}  // namespace

Status check_forward_args(const Plan& plan, const ForwardArgs& a, const void* workspace,
                          int64_t workspace_bytes) {
  Status s = check_common(plan, Pass::FORWARD, a.cell, a.dtype, a.T, a.B, a.H, a.dirs,
                          a.watchdog_cycles, workspace, workspace_bytes);
  if (!s.ok()) return s;
  const bool lstm = a.cell == CellKind::LSTM;
  for (int d = 0; d < a.dirs; ++d) {
    const ForwardDirection& f = a.dir[d];
    if (!f.gx || !f.w_hh || !f.h0 || !f.y || !f.h_n) return invalid("gx, w_hh, h0, y and h_n are required", d);
    if (lstm && (!f.c0 || !f.c_n)) return invalid("LSTM needs c0 and c_n", d);
    if (f.y_stride < a.H) return invalid("y_stride < H", d);
    if (f.saved && f.saved_stride < saved_count(a.cell) * a.H) return invalid("saved_stride < saved_count * H", d);
    if (f.h_saved && f.h_saved_stride < a.H) return invalid("h_saved_stride < H", d);
  }
  return Status{};
}

Status check_backward_args(const Plan& plan, const BackwardArgs& a, const void* workspace,
                           int64_t workspace_bytes) {
  Status s = check_common(plan, Pass::BACKWARD, a.cell, a.dtype, a.T, a.B, a.H, a.dirs,
                          a.watchdog_cycles, workspace, workspace_bytes);
  if (!s.ok()) return s;
  const bool lstm = a.cell == CellKind::LSTM, gru = a.cell == CellKind::GRU;
  for (int d = 0; d < a.dirs; ++d) {
    const BackwardDirection& b = a.dir[d];
    if (!b.w_hh || !b.dgx || !b.dh0) return invalid("w_hh, dgx and dh0 are required", d);
    if (lstm && (!b.c0 || !b.dc0 || !b.saved)) return invalid("LSTM needs c0, dc0 and saved", d);
    if (gru && (!b.h0 || !b.saved || !b.h_seq || !b.dgh)) return invalid("GRU needs h0, saved, h_seq and dgh", d);
    if (!lstm && !gru && !b.h_seq) return invalid("RNN needs h_seq", d);
    if (b.dy && b.dy_stride < a.H) return invalid("dy_stride < H", d);
    if (b.saved && b.saved_stride < saved_count(a.cell) * a.H) return invalid("saved_stride < saved_count * H", d);
    if (b.h_seq && b.h_seq_stride < a.H) return invalid("h_seq_stride < H", d);
  }
  return Status{};
}

}  // namespace persistent
}  // namespace rnnkit
