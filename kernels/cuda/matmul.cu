// The matmul ops of kernels/cuda/dense.h on cuBLASLt (bf16 A and B, fp32 compute), and the deterministic
// bias-gradient kernel. Row-major buffers are handed to the column-major cuBLASLt as their transposes:
// a row-major (R,K) matrix is a column-major (K,R) one with leading dimension K.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/dense.h"

namespace dape::kernels::cuda {
namespace {

// dbias (OC) fp32 += column sums of dout (N,OC) bf16. blockDim (32, 32): block b owns columns 32 b + tx;
// thread (tx, ty) sums rows ty, ty + 32, ... in order, then thread (tx, 0) adds the 32 partials in order.
__global__ void bias_backward_column_tile(float* dbias, const __nv_bfloat16* dout, int N, int OC) {
  __shared__ float part[32][33];
  const int tx = threadIdx.x, ty = threadIdx.y, o = blockIdx.x * 32 + tx;
  float sum = 0.0f;
  if (o < OC)
    for (int n = ty; n < N; n += 32) sum += __bfloat162float(dout[size_t(n) * OC + o]);
  part[ty][tx] = sum;
  __syncthreads();
  if (ty != 0 || o >= OC) return;
  float total = 0.0f;
  for (int k = 0; k < 32; ++k) total += part[k][tx];
  dbias[o] += total;
}

// D (m,n) = alpha op(A) op(B) + beta D, column-major, fp32 compute. A is (k,m) if trans_a else (m,k) as
// stored, B is (n,k) if trans_b else (k,n); D is d_type (bf16 or fp32) with leading dimension m; bias, if not
// null, is a bf16 vector of m added to every column by the epilogue.
void matmul_lt(void* d, cudaDataType_t d_type, const __nv_bfloat16* a, bool trans_a, const __nv_bfloat16* b,
               bool trans_b, const __nv_bfloat16* bias, int m, int n, int k, float beta, const Blas& blas,
               Stream stream) {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a_layout = nullptr, b_layout = nullptr, d_layout = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  // Destroys the descriptors on every path out, the throwing ones included.
  struct Cleanup {
    cublasLtMatmulDesc_t& desc;
    cublasLtMatrixLayout_t &a, &b, &d;
    cublasLtMatmulPreference_t& preference;
    ~Cleanup() {
      if (preference) cublasLtMatmulPreferenceDestroy(preference);
      if (d) cublasLtMatrixLayoutDestroy(d);
      if (b) cublasLtMatrixLayoutDestroy(b);
      if (a) cublasLtMatrixLayoutDestroy(a);
      if (desc) cublasLtMatmulDescDestroy(desc);
    }
  } cleanup{desc, a_layout, b_layout, d_layout, preference};

  CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                          op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  if (bias != nullptr) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  CUBLAS_CHECK(trans_a ? cublasLtMatrixLayoutCreate(&a_layout, CUDA_R_16BF, k, m, k)
                       : cublasLtMatrixLayoutCreate(&a_layout, CUDA_R_16BF, m, k, m));
  CUBLAS_CHECK(trans_b ? cublasLtMatrixLayoutCreate(&b_layout, CUDA_R_16BF, n, k, n)
                       : cublasLtMatrixLayoutCreate(&b_layout, CUDA_R_16BF, k, n, k));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d_layout, d_type, m, n, m));

  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  const size_t workspace_bytes = blas.workspace_bytes();
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &workspace_bytes, sizeof(workspace_bytes)));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(blas.handle(), desc, a_layout, b_layout, d_layout, d_layout,
                                              preference, 1, &heuristic, &found));
  if (found == 0)
    throw Error("cuBLASLt has no algorithm for a matmul of m = " + std::to_string(m) +
                ", n = " + std::to_string(n) + ", k = " + std::to_string(k));
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasLtMatmul(blas.handle(), desc, &alpha, a, a_layout, b, b_layout, &beta, d, d_layout, d,
                              d_layout, &heuristic.algo, blas.workspace(), workspace_bytes, stream));
}

void check_matmul_sizes(const char* op, int N, int C, int OC) {
  if (N < 0 || C <= 0 || OC <= 0 || C % 8 != 0 || OC % 8 != 0)
    throw Error(std::string(op) +
                ": expected N >= 0 and C, OC positive multiples of 8, got N = " + std::to_string(N) +
                ", C = " + std::to_string(C) + ", OC = " + std::to_string(OC) + " (pad the layer width)");
}

}  // namespace

Blas::Blas() {
  cublasLtHandle_t handle = nullptr;
  CUBLAS_CHECK(cublasLtCreate(&handle));
  handle_ = handle;
  const cudaError_t err = cudaMalloc(&workspace_, workspace_bytes_);
  if (err != cudaSuccess) {
    cublasLtDestroy(handle_);
    CUDA_CHECK(err);
  }
  cublasHandle_t batched = nullptr;
  const cublasStatus_t status = cublasCreate(&batched);
  if (status != CUBLAS_STATUS_SUCCESS) {
    cudaFree(workspace_);
    cublasLtDestroy(handle_);
    CUBLAS_CHECK(status);
  }
  batched_handle_ = batched;
}

Blas::~Blas() {
  cublasDestroy(batched_handle_);
  cudaFree(workspace_);
  cublasLtDestroy(handle_);
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS gets B first, and a row-major
// stored matrix is its own transpose in column-major, so each operand's op is T exactly when it is stored
// transposed.
void batched_matmul(void* c, bool c_fp32, int ldc, long long stride_c, const BatchedOperand& a,
                    const BatchedOperand& b, int M, int N, int K, int batch, float alpha, float beta,
                    const Blas& blas, Stream stream) {
  if (M < 0 || N < 0 || K < 0 || batch < 0)
    throw Error("batched_matmul: expected non-negative sizes, got M = " + std::to_string(M) + ", N = " +
                std::to_string(N) + ", K = " + std::to_string(K) + ", batch = " + std::to_string(batch));
  if (a.fp32 != b.fp32 || (a.fp32 && !c_fp32))
    throw Error("batched_matmul: A and B must both be bf16 or both fp32, and an fp32 product writes fp32");
  if (M == 0 || N == 0 || batch == 0) return;
  const cudaDataType_t in = a.fp32 ? CUDA_R_32F : CUDA_R_16BF;
  cublasHandle_t handle = blas.batched_handle();
  CUBLAS_CHECK(cublasSetStream(handle, stream));
  CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      handle, b.transposed ? CUBLAS_OP_T : CUBLAS_OP_N, a.transposed ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
      &alpha, b.data, in, b.ld, b.stride, a.data, in, a.ld, a.stride, &beta, c,
      c_fp32 ? CUDA_R_32F : CUDA_R_16BF, ldc, stride_c, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// out^T (OC,N) = weight (C,OC as stored)^T inp^T (C,N), column-major.
void matmul_forward(bf16* out, const bf16* inp, const bf16* weight, const bf16* bias, int N, int C, int OC,
                    const Blas& blas, Stream stream) {
  check_matmul_sizes("matmul_forward", N, C, OC);
  if (N == 0) return;
  matmul_lt(out, CUDA_R_16BF, as_device(weight), true, as_device(inp), false, as_device(bias), OC, N, C, 0.0f,
            blas, stream);
}

// dinp^T (C,N) = weight (C,OC as stored) dout^T (OC,N); dweight^T (C,OC) += inp^T (C,N) dout (N,OC).
void matmul_backward(bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp,
                     const bf16* weight, int N, int C, int OC, const Blas& blas, Stream stream) {
  check_matmul_sizes("matmul_backward", N, C, OC);
  if (N == 0) return;
  matmul_lt(dinp, CUDA_R_16BF, as_device(weight), false, as_device(dout), false, nullptr, C, N, OC, 0.0f,
            blas, stream);
  matmul_lt(dweight, CUDA_R_32F, as_device(inp), false, as_device(dout), true, nullptr, C, OC, N, 1.0f, blas,
            stream);
  if (dbias == nullptr) return;
  bias_backward_column_tile<<<blocks_for(OC, 32), dim3(32, 32), 0, stream>>>(dbias, as_device(dout), N, OC);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dape::kernels::cuda
