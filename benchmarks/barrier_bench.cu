// What one group barrier costs on this GPU, in microseconds, for the ways a
// persistent kernel can meet once a step (csrc/persistent/, PERSISTENT.md §4):
//
//   syncthreads   one block: __syncthreads (G1's barrier), the floor
//   grid_sync     cooperative_groups::this_grid().sync()
//   counter       one atomic counter every block adds to, polled with acquire
//   flags         per-block step flags: release store, warp 0 polls all with
//                 acquire (G3's barrier in csrc/persistent/backend_cuda.cuh)
//   flags_lines   the same with every flag on its own 128-byte line
//   flags+data    flags, then every block reads every block's 256 words (.cg):
//                 a step's h exchange at B*units = 256 values a block
//   tagged+data   the same data, each 8-byte word carrying its step tag; the
//                 readers wait on the data itself, no flag
//   cluster       barrier.cluster.arrive.release + wait.acquire (G2), all
//                 clusters of the grid running, cluster sizes 2..16
//   cluster+data  each block first pushes 256 words into every peer's shared
//                 memory (distributed shared memory), then the cluster barrier
//
// at 16, 66 and 132 blocks (or as many as can be resident), 256 threads a
// block. Every wait has a clock64 watchdog: a stuck barrier prints WATCHDOG
// instead of hanging. Needs sm_90 for the cluster rows.
//
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 benchmarks/barrier_bench.cu -o barrier_bench
//   ./barrier_bench [table.md]      (benchmarks/gpu_run.sh does both)
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace cg = cooperative_groups;

#define CHECK(call)                                                                          \
  do {                                                                                       \
    cudaError_t e_ = (call);                                                                 \
    if (e_ != cudaSuccess) {                                                                 \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

constexpr int kThreads = 256;
constexpr int kWords = 256;                        // words a block publishes per step
constexpr long long kWatchdog = 4000000000LL;      // cycles, about 2 s

struct Args {
  int iters;
  unsigned long long* counter;
  long long* flags;           // per block, 128 bytes apart when spread
  int flag_stride;            // in long longs: 1 packed, 16 spread
  unsigned long long* data;   // [2][blocks][kWords] tagged words, or plain floats
  float* sink;                // keeps loads alive
  int* error;
};

__device__ __forceinline__ void st_release(long long* p, long long v) {
  asm volatile("st.release.gpu.global.s64 [%0], %1;\n" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ long long ld_acquire(const long long* p) {
  long long v;
  asm volatile("ld.acquire.gpu.global.s64 %0, [%1];\n" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ unsigned long long ld_relaxed(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];\n" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_relaxed(unsigned long long* p, unsigned long long v) {
  asm volatile("st.relaxed.gpu.global.u64 [%0], %1;\n" ::"l"(p), "l"(v) : "memory");
}

// Returns false (and sets the error) once a wait has taken too long.
__device__ __forceinline__ bool still_waiting(long long start, int* error) {
  if (clock64() - start > kWatchdog) {
    atomicExch(error, 1);
    return false;
  }
  return *reinterpret_cast<volatile int*>(error) == 0;
}

__global__ void syncthreads_kernel(Args a) {
  for (int i = 0; i < a.iters; ++i) __syncthreads();
}

__global__ void grid_sync_kernel(Args a) {
  cg::grid_group grid = cg::this_grid();
  for (int i = 0; i < a.iters; ++i) grid.sync();
}

__global__ void counter_kernel(Args a) {
  __shared__ int ok;
  const long long blocks = gridDim.x;
  for (int i = 1; i <= a.iters; ++i) {
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(a.counter, 1ull);
      const long long start = clock64();
      bool good = true;
      while (ld_acquire(reinterpret_cast<const long long*>(a.counter)) < i * blocks)
        if (!(good = still_waiting(start, a.error))) break;
      ok = good;
    }
    __syncthreads();
    if (!ok) return;
  }
}

// The flag barrier of backend_cuda.cuh; with_data: then read every block's words.
template <bool WithData>
__global__ void flags_kernel(Args a) {
  __shared__ int ok;
  const int blocks = gridDim.x, lane = threadIdx.x;
  float acc = 0;
  for (int i = 1; i <= a.iters; ++i) {
    if (WithData) {  // publish this step's words
      float* mine = reinterpret_cast<float*>(a.data) + ((i & 1) * blocks + blockIdx.x) * kWords;
      __stcg(mine + threadIdx.x, float(i + threadIdx.x));
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      if (lane == 0) {
        __threadfence();
        st_release(a.flags + blockIdx.x * a.flag_stride, i);
      }
      const long long start = clock64();
      bool good = true;
      for (;;) {
        bool mine = true;
        for (int r = lane; r < blocks; r += 32) mine = mine && ld_acquire(a.flags + r * a.flag_stride) >= i;
        if (__all_sync(0xffffffffu, mine)) break;
        int stop = lane == 0 ? !still_waiting(start, a.error) : 0;
        if (__shfl_sync(0xffffffffu, stop, 0)) {
          good = false;
          break;
        }
      }
      if (lane == 0) ok = good;
    }
    __syncthreads();
    if (!ok) return;
    if (WithData) {
      const float* all = reinterpret_cast<const float*>(a.data) + (i & 1) * blocks * kWords;
      for (int w = threadIdx.x; w < blocks * kWords; w += blockDim.x) acc += __ldcg(all + w);
    }
  }
  if (WithData && acc == -1.f) a.sink[0] = acc;
}

// Tagged data: word = (step << 32) | value; readers wait on each word.
__global__ void tagged_kernel(Args a) {
  const int blocks = gridDim.x;
  float acc = 0;
  for (int i = 1; i <= a.iters; ++i) {
    unsigned long long* buf = a.data + (i & 1) * blocks * kWords;
    const unsigned long long word = (static_cast<unsigned long long>(i) << 32) | unsigned(threadIdx.x + i);
    st_relaxed(buf + blockIdx.x * kWords + threadIdx.x, word);
    const long long start = clock64();
    for (int w = threadIdx.x; w < blocks * kWords; w += blockDim.x) {
      unsigned long long v;
      while (((v = ld_relaxed(buf + w)) >> 32) != static_cast<unsigned long long>(i))
        if (!still_waiting(start, a.error)) return;
      acc += float(unsigned(v));
    }
    __syncthreads();  // the block's reads of buf end before anyone writes it two steps on
  }
  if (acc == -1.f) a.sink[0] = acc;
}

template <bool WithData>
__global__ void cluster_kernel(Args a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  __shared__ float words[2][16][kWords];
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  const unsigned rank = cluster.block_rank(), size = cluster.num_blocks();
  float acc = 0;
  for (int i = 1; i <= a.iters; ++i) {
    if (WithData) {
      for (unsigned r = 0; r < size; ++r)
        cluster.map_shared_rank(&words[i & 1][rank][0], r)[threadIdx.x] = float(i + threadIdx.x);
    }
    asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
    asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
    if (WithData)
      for (unsigned r = 0; r < size; ++r) acc += words[i & 1][r][threadIdx.x];
  }
  cluster.sync();
  if (acc == -1.f) a.sink[0] = acc;
#endif
}

struct Row {
  std::string method;
  int blocks, cluster;
  double us;  // < 0: watchdog
};

Args make_args(int iters, int max_blocks, int flag_stride, void* scratch) {
  Args a{};
  a.iters = iters;
  char* p = static_cast<char*>(scratch);
  a.counter = reinterpret_cast<unsigned long long*>(p);
  a.error = reinterpret_cast<int*>(p + 128);
  a.flags = reinterpret_cast<long long*>(p + 256);
  a.flag_stride = flag_stride;
  a.data = reinterpret_cast<unsigned long long*>(p + 256 + size_t(max_blocks) * 16 * 8);
  a.sink = reinterpret_cast<float*>(a.data + 2 * size_t(max_blocks) * kWords);
  return a;
}

size_t scratch_bytes(int max_blocks) {
  return 256 + size_t(max_blocks) * 16 * 8 + 2 * size_t(max_blocks) * kWords * 8 + 256;
}

// Times `iters` barriers of one launch (after a warm-up launch); µs per barrier.
double time_launch(void (*kernel)(Args), int blocks, int cluster, bool cooperative, int iters,
                   int flag_stride, void* scratch, int max_blocks) {
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  float ms = 0;
  for (int round = 0; round < 2; ++round) {  // round 0 warms up
    const int n = round == 0 ? iters / 10 : iters;
    Args a = make_args(n, max_blocks, flag_stride, scratch);
    CHECK(cudaMemset(scratch, 0, scratch_bytes(max_blocks)));
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(blocks);
    config.blockDim = dim3(kThreads);
    config.stream = 0;
    cudaLaunchAttribute attr[1];
    config.attrs = attr;
    config.numAttrs = 0;
    if (cooperative) {
      attr[0].id = cudaLaunchAttributeCooperative;
      attr[0].val.cooperative = 1;
      config.numAttrs = 1;
    } else if (cluster > 1) {
      attr[0].id = cudaLaunchAttributeClusterDimension;
      attr[0].val.clusterDim.x = cluster;
      attr[0].val.clusterDim.y = attr[0].val.clusterDim.z = 1;
      config.numAttrs = 1;
    }
    CHECK(cudaEventRecord(start));
    CHECK(cudaLaunchKernelEx(&config, kernel, a));
    CHECK(cudaGetLastError());
    CHECK(cudaEventRecord(stop));
    CHECK(cudaEventSynchronize(stop));
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    int error = 0;
    CHECK(cudaMemcpy(&error, a.error, sizeof(int), cudaMemcpyDeviceToHost));
    if (error) return -1;
  }
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  return ms * 1000.0 / iters;
}

int main(int argc, char** argv) {
  int device = 0;
  CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, device));
  const int sms = prop.multiProcessorCount;
  const int iters = 20000;
  int max_blocks = 0;
  for (int n : {16, 66, 132}) max_blocks = n > max_blocks ? n : max_blocks;
  max_blocks = max_blocks > sms ? max_blocks : sms;
  void* scratch = nullptr;
  CHECK(cudaMalloc(&scratch, scratch_bytes(max_blocks)));

  std::vector<Row> rows;
  rows.push_back({"syncthreads", 1, 1, time_launch(syncthreads_kernel, 1, 1, false, iters, 1, scratch, max_blocks)});
  struct GridMethod {
    const char* name;
    void (*kernel)(Args);
    int flag_stride;
  } methods[] = {{"grid_sync", grid_sync_kernel, 1},      {"counter", counter_kernel, 1},
                 {"flags", flags_kernel<false>, 1},       {"flags_lines", flags_kernel<false>, 16},
                 {"flags+data", flags_kernel<true>, 1},   {"tagged+data", tagged_kernel, 1}};
  for (const GridMethod& m : methods) {
    int per_sm = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, m.kernel, kThreads, 0));
    for (int blocks : {16, 66, 132}) {
      if (blocks > per_sm * sms) continue;  // cannot all be resident: a cooperative launch would fail
      rows.push_back({m.name, blocks, 1, time_launch(m.kernel, blocks, 1, true, iters, m.flag_stride, scratch, max_blocks)});
    }
  }
  if (prop.major >= 9) {
    for (int with_data = 0; with_data < 2; ++with_data) {
      void (*kernel)(Args) = with_data ? cluster_kernel<true> : cluster_kernel<false>;
      CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
      for (int cs : {2, 4, 8, 16}) {
        cudaLaunchConfig_t config = {};
        config.gridDim = dim3((sms / cs) * cs);
        config.blockDim = dim3(kThreads);
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeClusterDimension;
        attr[0].val.clusterDim.x = cs;
        attr[0].val.clusterDim.y = attr[0].val.clusterDim.z = 1;
        config.attrs = attr;
        config.numAttrs = 1;
        int clusters = 0;
        if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) != cudaSuccess || clusters < 1) {
          cudaGetLastError();
          rows.push_back({with_data ? "cluster+data" : "cluster", 0, cs, -2});
          continue;
        }
        const int blocks = std::min(clusters, sms / cs) * cs;
        rows.push_back({with_data ? "cluster+data" : "cluster", blocks, cs,
                        time_launch(kernel, blocks, cs, false, iters, 1, scratch, max_blocks)});
      }
    }
  }

  std::string table;
  char line[256];
  std::snprintf(line, sizeof(line), "# Barrier cost on %s (%d SMs, cc %d.%d), %d threads/block, %d barriers a launch\n\n",
                prop.name, sms, prop.major, prop.minor, kThreads, iters);
  table += line;
  table += "| method | blocks | cluster | us per barrier |\n|---|---:|---:|---:|\n";
  for (const Row& r : rows) {
    if (r.us == -1) std::snprintf(line, sizeof(line), "| %s | %d | %d | WATCHDOG |\n", r.method.c_str(), r.blocks, r.cluster);
    else if (r.us == -2) std::snprintf(line, sizeof(line), "| %s | - | %d | does not fit |\n", r.method.c_str(), r.cluster);
    else std::snprintf(line, sizeof(line), "| %s | %d | %d | %.3f |\n", r.method.c_str(), r.blocks, r.cluster, r.us);
    table += line;
  }
  std::fputs(table.c_str(), stdout);
  if (argc > 1) {
    FILE* f = std::fopen(argv[1], "w");
    if (f) {
      std::fputs(table.c_str(), f);
      std::fclose(f);
    }
  }
  CHECK(cudaFree(scratch));
  return 0;
}
