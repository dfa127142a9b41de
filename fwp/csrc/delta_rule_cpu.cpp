// Fused CPU recurrence of the delta rule (Schlag, Irie, Schmidhuber 2021), forward and a
// memory-light backward that rebuilds S_{t−1} = S_t − k_t u_tᵀ in reverse.
//
//   u_t = β_t (v_t − S_{t−1}ᵀ k_t),   S_t = S_{t−1} + k_t u_tᵀ,   o_t = S_tᵀ q_t
//
// Per (batch, head) the forward keeps S in a local buffer of K rows of Vp (V padded) values:
// Sᵀ k = Σ_i k_i S[i, :] and the k uᵀ update are SIMD axpys over the contiguous value index. It
// saves only d_t = v_t − S_{t−1}ᵀ k_t per step (the size of v) and S_T.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "fused_cpu.h"
#include "kernels.h"

namespace fwp {

template <typename T>
void delta_rule_forward_kernel(const DeltaDims& s, const DeltaForward<T>& p) {
  const int64_t T_ = s.T, H = s.H, K = s.K, V = s.V;
  const int64_t Vp = padded(V);
  at::parallel_for(0, s.B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> S(K * Vp), v_old(Vp), read(Vp), u(Vp, T(0));
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      std::fill(S.begin(), S.end(), T(0));
      if (p.S0 != nullptr)
        for (int64_t i = 0; i < K; ++i) copy(p.S0 + (bh * K + i) * V, V, &S[i * Vp]);

      for (int64_t t = 0; t < T_; ++t) {
        const int64_t token = (b * T_ + t) * H + h;  // inputs and outputs are [B, T, H, ·]
        if (t + kAhead < T_) {
          const int64_t ahead = token + kAhead * H;
          prefetch(p.q + ahead * K);
          prefetch(p.k + ahead * K);
          prefetch(p.v + ahead * V);
          prefetch(p.beta + ahead);
          prefetch(p.o + ahead * V);
        }
        const T* q = p.q + token * K;
        const T* k = p.k + token * K;
        const T* v = p.v + token * V;
        const T beta = p.beta[token];
        // One sweep reads S_{t−1}ᵀ k and S_{t−1}ᵀ q; then o = S_tᵀ q = S_{t−1}ᵀ q + ⟨k, q⟩ u.
        combine_rows(S.data(), Vp, k, K, Vp, v_old.data());
        combine_rows(S.data(), Vp, q, K, Vp, read.data());
        T* diff = p.diff + (bh * T_ + t) * V;
        for (int64_t j = 0; j < V; ++j) {
          diff[j] = v[j] - v_old[j];
          u[j] = beta * diff[j];
        }
        add_outer(S.data(), Vp, k, u.data(), K, Vp);
        const T kq = dot(k, q, K);
        T* o = p.o + token * V;
        for (int64_t j = 0; j < V; ++j) o[j] = read[j] + kq * u[j];
      }
      for (int64_t i = 0; i < K; ++i) copy(&S[i * Vp], V, p.S_T + (bh * K + i) * V);
    }
  });
}

// One reverse step, G = ∂L/∂S_t from the later steps, S = S_t:
//   ∂q = S ∂o,  G += q ∂oᵀ,  S ← S_{t−1} = S − k uᵀ,  ∂u = Gᵀ k,  ∂v = β ∂u,  ∂β = ⟨∂u, d⟩,
//   ∂k = G u − S_{t−1} ∂v,  G ← G − k ∂vᵀ  (= ∂L/∂S_{t−1})
//
// The backward multiplies S only from the right (S g), so it keeps Sᵀ (St[j * Kp + i], Kp = K
// padded) where S g = Σ_j g_j Sᵀ[j, :] is a combination of rows. G is multiplied both ways, so it
// is kept twice, as G (for Gᵀ k) and Gᵀ (for G u), and both copies take each rank-1 update.
template <typename T>
void delta_rule_backward_kernel(const DeltaDims& s, const DeltaBackward<T>& p) {
  const int64_t T_ = s.T, H = s.H, K = s.K, V = s.V;
  const int64_t Vp = padded(V), Kp = padded(K);
  at::parallel_for(0, s.B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> St(V * Kp), G(K * Vp), Gt(V * Kp), q(Kp, T(0)), k(Kp, T(0)), diff(Vp, T(0)),
        u(Vp, T(0)), grad_o(Vp, T(0)), grad_u(Vp), grad_v(Vp, T(0)), grad_q(Kp), grad_k(Kp),
        grad_k_old(Kp);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      std::fill(St.begin(), St.end(), T(0));
      std::fill(G.begin(), G.end(), T(0));
      std::fill(Gt.begin(), Gt.end(), T(0));
      for (int64_t i = 0; i < K; ++i)
        for (int64_t j = 0; j < V; ++j) {
          const int64_t at = (bh * K + i) * V + j;
          St[j * Kp + i] = p.S_T[at];
          G[i * Vp + j] = p.grad_S_T[at];
          Gt[j * Kp + i] = p.grad_S_T[at];
        }
      for (int64_t t = T_ - 1; t >= 0; --t) {
        const int64_t token = (b * T_ + t) * H + h;
        if (t >= kAhead) {
          const int64_t ahead = token - kAhead * H;
          prefetch(p.q + ahead * K);
          prefetch(p.k + ahead * K);
          prefetch(p.beta + ahead);
          prefetch(p.grad_o + ahead * V);
          prefetch(p.grad_q + ahead * K);
          prefetch(p.grad_k + ahead * K);
          prefetch(p.grad_v + ahead * V);
          prefetch(p.grad_beta + ahead);
        }
        // Local copies padded with zeros.
        copy(p.q + token * K, K, q.data());
        copy(p.k + token * K, K, k.data());
        copy(p.diff + (bh * T_ + t) * V, V, diff.data());
        copy(p.grad_o + token * V, V, grad_o.data());
        const T beta = p.beta[token];
        for (int64_t j = 0; j < Vp; ++j) u[j] = beta * diff[j];

        combine_rows(St.data(), Kp, grad_o.data(), V, Kp, grad_q.data());  // S_t ∂o
        add_outer(G.data(), Vp, q.data(), grad_o.data(), K, Vp);           // G += q ∂oᵀ
        add_outer(Gt.data(), Kp, grad_o.data(), q.data(), V, Kp);
        for (int64_t j = 0; j < V; ++j) axpy(&St[j * Kp], -u[j], k.data(), Kp);  // S_{t−1}
        combine_rows(G.data(), Vp, k.data(), K, Vp, grad_u.data());        // Gᵀ k
        combine_rows(Gt.data(), Kp, u.data(), V, Kp, grad_k.data());       // G u
        for (int64_t j = 0; j < Vp; ++j) grad_v[j] = beta * grad_u[j];
        p.grad_beta[token] = dot(grad_u.data(), diff.data(), Vp);
        combine_rows(St.data(), Kp, grad_v.data(), V, Kp, grad_k_old.data());  // S_{t−1} ∂v
        for (int64_t i = 0; i < K; ++i) grad_k[i] -= grad_k_old[i];
        for (int64_t i = 0; i < K; ++i) axpy(&G[i * Vp], -k[i], grad_v.data(), Vp);  // G −= k ∂vᵀ
        for (int64_t j = 0; j < V; ++j) axpy(&Gt[j * Kp], -grad_v[j], k.data(), Kp);

        copy(grad_q.data(), K, p.grad_q + token * K);
        copy(grad_k.data(), K, p.grad_k + token * K);
        copy(grad_v.data(), V, p.grad_v + token * V);
      }
      for (int64_t i = 0; i < K; ++i) copy(&G[i * Vp], V, p.grad_S0 + (bh * K + i) * V);
    }
  });
}

template void delta_rule_forward_kernel<float>(const DeltaDims&, const DeltaForward<float>&);
template void delta_rule_forward_kernel<double>(const DeltaDims&, const DeltaForward<double>&);
template void delta_rule_backward_kernel<float>(const DeltaDims&, const DeltaBackward<float>&);
template void delta_rule_backward_kernel<double>(const DeltaDims&, const DeltaBackward<double>&);

}  // namespace fwp
