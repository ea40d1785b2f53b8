// The block backends of the CUDA kernels (see block.h for the interface):
//
//   BlockBackend    G1: one block a group; X in its own shared memory; the
//                   barrier is __syncthreads.
//   ClusterBackend  G2 (sm_90): a thread-block cluster a group; each block
//                   pushes what it publishes into every peer's shared memory
//                   (distributed shared memory), and the hardware cluster
//                   barrier (arrive.release / wait.acquire) orders it.
//   GridBackend     G3: blocks of a cooperative grid; X in global memory
//                   (stores and loads at L2, .cg, so no stale L1 line is read);
//                   the barrier: each block stores its epoch to its own flag
//                   with release, one warp polls the group's flags with
//                   acquire; a clock64 watchdog ends the wait with an error.
#pragma once

#include <cooperative_groups.h>

#include "block.h"

namespace rnnkit {
namespace persistent {

struct CudaWorkspace {
  int64_t* flags;           // per block: the last epoch it arrived at (zeroed before launch)
  int64_t* error;           // kErrorWords: code, group, rank, epoch (zeroed before launch)
  unsigned char* exchange;  // GRID: X[group][parity] (Np, Kp)
  int64_t watchdog_cycles;
};

// What the three backends share: a block is `blocks` consecutive blockIdx.x
// of a group; a worker of Lanes threads is consecutive threadIdx.x.
struct CudaBackendBase {
  const Geometry& g;
  unsigned char* sm;

  __device__ CudaBackendBase(const Geometry& geo, unsigned char* smem) : g(geo), sm(smem) {}
  __device__ int group() const { return static_cast<int>(blockIdx.x) / g.blocks; }
  __device__ int rank() const { return static_cast<int>(blockIdx.x) % g.blocks; }
  __device__ unsigned char* smem() { return sm; }
  template <int Lanes, class F>
  __device__ void each_worker(const F& f) {
    f(static_cast<int>(threadIdx.x) / Lanes, static_cast<int>(blockDim.x) / Lanes,
      static_cast<int>(threadIdx.x) % Lanes);
  }
  __device__ void sync_block() { __syncthreads(); }
};

struct BlockBackend : CudaBackendBase {
  static constexpr bool kReplicated = true;

  __device__ BlockBackend(const Geometry& geo, const CudaWorkspace&, unsigned char* smem)
      : CudaBackendBase(geo, smem) {}
  template <class T>
  __device__ void store_x(int parity, int64_t c, int64_t k, T v) {
    reinterpret_cast<T*>(sm + g.off_x)[(parity * g.Np + c) * g.ldx + k] = v;
  }
  template <class T>
  __device__ T load_x(int, int64_t, int64_t) { return zero<T>(); }  // replicated: never called
  __device__ bool group_barrier(int64_t) {
    __syncthreads();
    return true;
  }
};

struct ClusterBackend : CudaBackendBase {
  static constexpr bool kReplicated = true;

  // Every block of the cluster has started before anyone writes into a peer.
  __device__ ClusterBackend(const Geometry& geo, const CudaWorkspace&, unsigned char* smem)
      : CudaBackendBase(geo, smem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cooperative_groups::this_cluster().sync();
#else
    __trap();  // the planner gives clusters only to sm_90 and newer
#endif
  }
  template <class T>
  __device__ void store_x(int parity, int64_t c, int64_t k, T v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    T* local = reinterpret_cast<T*>(sm + g.off_x) + (parity * g.Np + c) * g.ldx + k;
    cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
    for (int r = 0; r < g.blocks; ++r) *cluster.map_shared_rank(local, r) = v;
#endif
  }
  template <class T>
  __device__ T load_x(int, int64_t, int64_t) { return zero<T>(); }  // replicated: never called
  // No watchdog: the hardware barrier cannot be left early, and every block
  // of a cluster runs the same number of steps.
  __device__ bool group_barrier(int64_t) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
    asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
    return true;
  }
};

__device__ __forceinline__ void store_release(int64_t* p, int64_t v) {
  asm volatile("st.release.gpu.global.s64 [%0], %1;\n" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ int64_t load_acquire(const int64_t* p) {
  int64_t v;
  asm volatile("ld.acquire.gpu.global.s64 %0, [%1];\n" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ int64_t load_relaxed(const int64_t* p) {
  int64_t v;
  asm volatile("ld.relaxed.gpu.global.s64 %0, [%1];\n" : "=l"(v) : "l"(p) : "memory");
  return v;
}

struct GridBackend : CudaBackendBase {
  static constexpr bool kReplicated = false;
  const CudaWorkspace& ws;

  __device__ GridBackend(const Geometry& geo, const CudaWorkspace& w, unsigned char* smem)
      : CudaBackendBase(geo, smem), ws(w) {}

  template <class T>
  __device__ T* x_at(int parity, int64_t c, int64_t k) {
    return reinterpret_cast<T*>(ws.exchange) + ((int64_t(group()) * 2 + parity) * g.Np + c) * g.Kp + k;
  }
  template <class T>
  __device__ void store_x(int parity, int64_t c, int64_t k, T v) { __stcg(x_at<T>(parity, c, k), v); }
  template <class T>
  __device__ T load_x(int parity, int64_t c, int64_t k) { return __ldcg(x_at<T>(parity, c, k)); }

  // All threads: __syncthreads orders the block's stores before thread 0's
  // fence + release; warp 0 polls; __syncthreads hands the acquire to all.
  __device__ bool group_barrier(int64_t epoch) {
    __shared__ int arrived_ok;
    __syncthreads();
    if (threadIdx.x < 32) {
      int64_t* flags = ws.flags + int64_t(group()) * g.blocks;
      const int lane = static_cast<int>(threadIdx.x);
      if (lane == 0) {
        __threadfence();
        store_release(flags + rank(), epoch);
      }
      const long long start = clock64();
      bool ok = true;
      for (;;) {
        bool mine = true;
        for (int r = lane; r < g.blocks; r += 32) mine = mine && load_acquire(flags + r) >= epoch;
        if (__all_sync(0xffffffffu, mine)) break;
        int stop = 0;  // 1: another block gave up, 2: this one times out
        if (lane == 0) {
          if (load_relaxed(ws.error) != 0) stop = 1;
          else if (clock64() - start > ws.watchdog_cycles) stop = 2;
        }
        stop = __shfl_sync(0xffffffffu, stop, 0);
        if (stop) {
          if (stop == 2 && lane == 0 &&
              atomicCAS(reinterpret_cast<unsigned long long*>(ws.error), 0ull,
                        static_cast<unsigned long long>(StatusCode::WATCHDOG)) == 0ull) {
            ws.error[1] = group();
            ws.error[2] = rank();
            ws.error[3] = epoch;
          }
          ok = false;
          break;
        }
      }
      if (lane == 0) arrived_ok = ok;
    }
    __syncthreads();
    return arrived_ok != 0;
  }
};

}  // namespace persistent
}  // namespace rnnkit
