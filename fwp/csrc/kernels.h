// The fused CPU scans on raw pointers, one function per direction and precision.
//
// Tensor handling (checks, allocation, dtype dispatch, registration as torch ops) lives in
// ops.cpp; keeping the kernels free of the tensor headers keeps their compile time short.
// All pointers are to contiguous arrays in the layouts written next to each field.
#pragma once

#include <cstdint>

namespace fwp {

// SRWM: R = d_out + 2 D + n_beta rows in the order y, k, q, β.
struct SRWMDims {
  int64_t B, T, H, D, R, d_out, n_beta;
  bool input_softmax;
  double rate_scale;  // s of the rates s·σ(b): 1, or 2 for rates in (0, 2)
};

template <typename T>
struct SRWMForward {
  const T* x;               // [B, T, H, D]
  const T* W0;              // [B, H, R, D] at the strides below (stride 0 over B if shared)
  int64_t W0_stride[4];
  T* y;                     // [B, T, H, d_out]
  T* W_T;                   // [B, H, R, D]
  T* pk;                    // φ(k_t)       [B, H, T, D]
  T* pq;                    // φ(q_t)       [B, H, T, D]
  T* rate;                  // s·σ(b_t)     [B, H, T, n_beta]
  T* diff;                  // v_t − v̄_t    [B, H, T, R]
};

template <typename T>
struct SRWMBackward {
  const T *x, *pk, *pq, *rate, *diff, *W_T;  // as saved by the forward
  const T* grad_y;          // [B, T, H, d_out]
  const T* grad_W_T;        // [B, H, R, D]
  T* grad_x;                // [B, T, H, D]
  T* grad_W0;               // [B, H, R, D], per sequence
};

template <typename T>
void srwm_forward_kernel(const SRWMDims& s, const SRWMForward<T>& p);
template <typename T>
void srwm_backward_kernel(const SRWMDims& s, const SRWMBackward<T>& p);

// Delta rule: keys and queries of size K, values of size V.
struct DeltaDims {
  int64_t B, T, H, K, V;
};

template <typename T>
struct DeltaForward {
  const T *q, *k;           // [B, T, H, K]
  const T* v;               // [B, T, H, V]
  const T* beta;            // [B, T, H]
  const T* S0;              // [B, H, K, V], or null for zeros
  T* o;                     // [B, T, H, V]
  T* S_T;                   // [B, H, K, V]
  T* diff;                  // v_t − S_{t−1}ᵀ k_t  [B, H, T, V]
};

template <typename T>
struct DeltaBackward {
  const T *q, *k, *beta, *diff, *S_T;  // as in the forward
  const T* grad_o;          // [B, T, H, V]
  const T* grad_S_T;        // [B, H, K, V]
  T *grad_q, *grad_k;       // [B, T, H, K]
  T* grad_v;                // [B, T, H, V]
  T* grad_beta;             // [B, T, H]
  T* grad_S0;               // [B, H, K, V]
};

template <typename T>
void delta_rule_forward_kernel(const DeltaDims& s, const DeltaForward<T>& p);
template <typename T>
void delta_rule_backward_kernel(const DeltaDims& s, const DeltaBackward<T>& p);

}  // namespace fwp
