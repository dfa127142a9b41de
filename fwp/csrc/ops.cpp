// The fused CPU scans as torch operators (torch.ops.fwp.*): checks, allocation, dtype dispatch.
// The autograd wiring is in Python (fwp/ops/srwm/cpu.py, fwp/ops/delta_rule/cpu.py).
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "kernels.h"

namespace fwp {
namespace {

void check_input(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t dims) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == dims, name, " must have ", dims, " dimensions, got ", t.dim());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == dtype, name, " has dtype ", t.scalar_type(), ", expected ", dtype);
}

void check_float_or_double(at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "the fused CPU kernels take float32 or float64 tensors, got ", dtype);
}

template <typename T>
T* ptr(const at::Tensor& t) {
  return t.data_ptr<T>();
}

// x [B, T, H, D], W0 [B, H, R, D] (any strides). Returns {y, W_T, φ(k), φ(q), s·σ(b), v − v̄}.
std::vector<at::Tensor> srwm_forward(
    const at::Tensor& x, const at::Tensor& W0, int64_t n_beta, bool input_softmax,
    double rate_scale) {
  const auto dtype = x.scalar_type();
  check_float_or_double(dtype);
  check_input(x, "x", dtype, 4);
  TORCH_CHECK(W0.device().is_cpu() && W0.dim() == 4 && W0.scalar_type() == dtype,
              "W0 must be a CPU [B, H, R, D] tensor of x's dtype");
  TORCH_CHECK(n_beta == 1 || n_beta == 4, "n_beta must be 1 or 4, got ", n_beta);
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), R = W0.size(2);
  const SRWMDims s{B, T, H, D, R, R - 2 * D - n_beta, n_beta, input_softmax, rate_scale};
  TORCH_CHECK(W0.size(0) == B && W0.size(1) == H && W0.size(3) == D && s.d_out >= 1,
              "W0 must be [B, H, R, D] with R > 2 D + n_beta");
  const auto opts = x.options();
  at::Tensor y = at::empty({B, T, H, s.d_out}, opts);
  at::Tensor W_T = at::empty({B, H, R, D}, opts);
  at::Tensor pk = at::empty({B, H, T, D}, opts);
  at::Tensor pq = at::empty({B, H, T, D}, opts);
  at::Tensor rate = at::empty({B, H, T, n_beta}, opts);
  at::Tensor diff = at::empty({B, H, T, R}, opts);
  auto run = [&](auto zero) {
    using T_ = decltype(zero);
    SRWMForward<T_> p{ptr<T_>(x), ptr<T_>(W0), {W0.stride(0), W0.stride(1), W0.stride(2), W0.stride(3)},
                      ptr<T_>(y), ptr<T_>(W_T), ptr<T_>(pk), ptr<T_>(pq), ptr<T_>(rate), ptr<T_>(diff)};
    srwm_forward_kernel<T_>(s, p);
  };
  dtype == at::kFloat ? run(0.0f) : run(0.0);
  return {y, W_T, pk, pq, rate, diff};
}

// Returns {∂x [B, T, H, D], ∂W0 [B, H, R, D]} (per sequence: the caller sums a shared W0).
std::vector<at::Tensor> srwm_backward(
    const at::Tensor& x, const at::Tensor& pk, const at::Tensor& pq, const at::Tensor& rate,
    const at::Tensor& diff, const at::Tensor& W_T, const at::Tensor& grad_y,
    const at::Tensor& grad_W_T, int64_t n_beta, bool input_softmax, double rate_scale) {
  const auto dtype = x.scalar_type();
  check_float_or_double(dtype);
  check_input(x, "x", dtype, 4);
  check_input(pk, "pk", dtype, 4);
  check_input(pq, "pq", dtype, 4);
  check_input(rate, "rate", dtype, 4);
  check_input(diff, "diff", dtype, 4);
  check_input(W_T, "W_T", dtype, 4);
  check_input(grad_y, "grad_y", dtype, 4);
  check_input(grad_W_T, "grad_W_T", dtype, 4);
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), R = W_T.size(2);
  const SRWMDims s{B, T, H, D, R, R - 2 * D - n_beta, n_beta, input_softmax, rate_scale};
  TORCH_CHECK(diff.size(3) == R && rate.size(3) == n_beta && grad_y.size(3) == s.d_out,
              "srwm_backward: saved tensors do not match x and W_T");
  at::Tensor grad_x = at::empty_like(x);
  at::Tensor grad_W0 = at::empty_like(W_T);
  auto run = [&](auto zero) {
    using T_ = decltype(zero);
    SRWMBackward<T_> p{ptr<T_>(x),      ptr<T_>(pk),       ptr<T_>(pq),     ptr<T_>(rate),
                       ptr<T_>(diff),   ptr<T_>(W_T),      ptr<T_>(grad_y), ptr<T_>(grad_W_T),
                       ptr<T_>(grad_x), ptr<T_>(grad_W0)};
    srwm_backward_kernel<T_>(s, p);
  };
  dtype == at::kFloat ? run(0.0f) : run(0.0);
  return {grad_x, grad_W0};
}

// q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H], S0 [B, H, K, V] or none.
// Returns {o [B, T, H, V], S_T [B, H, K, V], v − S_{t−1}ᵀ k [B, H, T, V]}.
std::vector<at::Tensor> delta_rule_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
    const std::optional<at::Tensor>& initial_state) {
  const auto dtype = q.scalar_type();
  check_float_or_double(dtype);
  check_input(q, "q", dtype, 4);
  check_input(k, "k", dtype, 4);
  check_input(v, "v", dtype, 4);
  check_input(beta, "beta", dtype, 3);
  const int64_t B = k.size(0), T = k.size(1), H = k.size(2), K = k.size(3), V = v.size(3);
  TORCH_CHECK(q.sizes() == k.sizes() && v.size(0) == B && v.size(1) == T && v.size(2) == H &&
                  beta.size(0) == B && beta.size(1) == T && beta.size(2) == H,
              "delta_rule_forward: q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H] mismatch");
  if (initial_state.has_value()) {
    check_input(*initial_state, "initial_state", dtype, 4);
    TORCH_CHECK(initial_state->size(0) == B && initial_state->size(1) == H &&
                    initial_state->size(2) == K && initial_state->size(3) == V,
                "initial_state must be [B, H, K, V]");
  }
  const auto opts = q.options();
  at::Tensor o = at::empty({B, T, H, V}, opts);
  at::Tensor S_T = at::empty({B, H, K, V}, opts);
  at::Tensor diff = at::empty({B, H, T, V}, opts);
  auto run = [&](auto zero) {
    using T_ = decltype(zero);
    const T_* S0 = initial_state.has_value() ? ptr<T_>(*initial_state) : nullptr;
    DeltaForward<T_> p{ptr<T_>(q), ptr<T_>(k),   ptr<T_>(v),   ptr<T_>(beta),
                       S0,         ptr<T_>(o), ptr<T_>(S_T), ptr<T_>(diff)};
    delta_rule_forward_kernel<T_>(DeltaDims{B, T, H, K, V}, p);
  };
  dtype == at::kFloat ? run(0.0f) : run(0.0);
  return {o, S_T, diff};
}

// Returns {∂q, ∂k, ∂v, ∂beta, ∂S0}.
std::vector<at::Tensor> delta_rule_backward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& beta, const at::Tensor& diff, const at::Tensor& S_T, const at::Tensor& grad_o,
    const at::Tensor& grad_S_T) {
  const auto dtype = q.scalar_type();
  check_float_or_double(dtype);
  check_input(q, "q", dtype, 4);
  check_input(k, "k", dtype, 4);
  check_input(beta, "beta", dtype, 3);
  check_input(diff, "diff", dtype, 4);
  check_input(S_T, "S_T", dtype, 4);
  check_input(grad_o, "grad_o", dtype, 4);
  check_input(grad_S_T, "grad_S_T", dtype, 4);
  const int64_t B = k.size(0), T = k.size(1), H = k.size(2), K = k.size(3), V = diff.size(3);
  TORCH_CHECK(grad_o.size(3) == V && S_T.size(2) == K && S_T.size(3) == V,
              "delta_rule_backward: saved tensors do not match q and k");
  at::Tensor grad_q = at::empty_like(q);
  at::Tensor grad_k = at::empty_like(k);
  at::Tensor grad_v = at::empty_like(grad_o);
  at::Tensor grad_beta = at::empty_like(beta);
  at::Tensor grad_S0 = at::empty_like(S_T);
  auto run = [&](auto zero) {
    using T_ = decltype(zero);
    DeltaBackward<T_> p{ptr<T_>(q),      ptr<T_>(k),      ptr<T_>(beta),      ptr<T_>(diff),
                        ptr<T_>(S_T),    ptr<T_>(grad_o), ptr<T_>(grad_S_T),  ptr<T_>(grad_q),
                        ptr<T_>(grad_k), ptr<T_>(grad_v), ptr<T_>(grad_beta), ptr<T_>(grad_S0)};
    delta_rule_backward_kernel<T_>(DeltaDims{B, T, H, K, V}, p);
  };
  dtype == at::kFloat ? run(0.0f) : run(0.0);
  return {grad_q, grad_k, grad_v, grad_beta, grad_S0};
}

}  // namespace
}  // namespace fwp

TORCH_LIBRARY(fwp, m) {
  m.def("srwm_forward", &fwp::srwm_forward);
  m.def("srwm_backward", &fwp::srwm_backward);
  m.def("delta_rule_forward", &fwp::delta_rule_forward);
  m.def("delta_rule_backward", &fwp::delta_rule_backward);
}
