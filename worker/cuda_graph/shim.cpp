// CUDA-graph capture and replay for convtt-worker (issue 17): a thin C ABI over libtorch's
// at::cuda::CUDAGraph, which tch 0.24 does not bind. Built by worker/build.rs into
// libconvtt_cuda_graph.so only where libtorch's and CUDA's headers are present, and loaded
// with dlopen by worker/src/train/cuda_graph.rs only when `train.cuda_graphs` is on, so the
// worker binary itself never links the CUDA libraries.
//
// Usage (one thread): convtt_graph_stream_begin(device) makes a pool stream current (warm-up
// steps and the capture run there, as torch.cuda.graph requires), convtt_graph_capture_begin /
// _end record every kernel the thread issues in between into the graph, convtt_graph_replay
// launches them again, convtt_graph_stream_end synchronises and restores the previous stream.
// Every function returns 0 on success, else 1 with a message in `err`.

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstring>
#include <exception>
#include <optional>
#include <string>

namespace {

struct Graph {
  at::cuda::CUDAGraph graph;
};

struct StreamState {
  std::optional<c10::cuda::CUDAStream> previous;
  std::optional<c10::cuda::CUDAStream> side;
};

thread_local StreamState stream_state;

int fail(char* err, size_t n, const char* what) {
  if (err != nullptr && n > 0) {
    std::strncpy(err, what, n - 1);
    err[n - 1] = '\0';
  }
  return 1;
}

template <typename F>
int guarded(char* err, size_t n, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    return fail(err, n, e.what());
  } catch (...) {
    return fail(err, n, "unknown C++ exception");
  }
}

}  // namespace

extern "C" {

int convtt_graph_stream_begin(int device, char* err, size_t n) {
  return guarded(err, n, [&] {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
    auto current = c10::cuda::getCurrentCUDAStream(device);
    auto side = c10::cuda::getStreamFromPool(false, device);
    // The side stream starts after everything queued so far.
    cudaEvent_t ready;
    C10_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    C10_CUDA_CHECK(cudaEventRecord(ready, current.stream()));
    C10_CUDA_CHECK(cudaStreamWaitEvent(side.stream(), ready, 0));
    C10_CUDA_CHECK(cudaEventDestroy(ready));
    stream_state.previous = current;
    stream_state.side = side;
    c10::cuda::setCurrentCUDAStream(side);
  });
}

int convtt_graph_stream_end(char* err, size_t n) {
  return guarded(err, n, [&] {
    if (stream_state.side) {
      stream_state.side->synchronize();
    }
    if (stream_state.previous) {
      c10::cuda::setCurrentCUDAStream(*stream_state.previous);
    }
    stream_state = StreamState{};
  });
}

void* convtt_graph_new(char* err, size_t n) {
  Graph* g = nullptr;
  if (guarded(err, n, [&] { g = new Graph(); }) != 0) {
    return nullptr;
  }
  return g;
}

int convtt_graph_capture_begin(void* g, char* err, size_t n) {
  return guarded(err, n, [&] { static_cast<Graph*>(g)->graph.capture_begin(); });
}

int convtt_graph_capture_end(void* g, char* err, size_t n) {
  return guarded(err, n, [&] { static_cast<Graph*>(g)->graph.capture_end(); });
}

int convtt_graph_replay(void* g, char* err, size_t n) {
  return guarded(err, n, [&] { static_cast<Graph*>(g)->graph.replay(); });
}

void convtt_graph_free(void* g) { delete static_cast<Graph*>(g); }

}  // extern "C"
