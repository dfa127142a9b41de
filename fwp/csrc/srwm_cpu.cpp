// Fused CPU scan of the self-referential weight matrix (seed paper Eq. 2–4), forward and a
// memory-light backward that rebuilds W_{t−1} = W_t − u_t ⊗ φ(k_t) in reverse.
//
// Per (batch, head) the forward keeps W in a local buffer stored column by column:
// W[d * Rp + r] is row r, column d of the paper's W (R rows y, k, q, β; D columns; Rp = R padded).
// Both products of a step are then combinations of contiguous columns, W a = Σ_d a_d W[:, d],
// and so is the update, W[:, d] += φ(k)_d u: no horizontal sums, every loop a SIMD axpy over r.
// The matrix (D = 16: 4 KB in float32) stays in L1 for the whole sequence.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "fused_cpu.h"
#include "kernels.h"

namespace fwp {
namespace {

// End of each block of rows (y, k, q, β).
inline void block_ends(const SRWMDims& s, int64_t ends[4]) {
  ends[0] = s.d_out;
  ends[1] = s.d_out + s.D;
  ends[2] = s.d_out + 2 * s.D;
  ends[3] = s.R;
}

// Rate of each row: σ(b) for all rows (n_beta = 1) or σ(b_i) for block i of (y, k, q, β).
template <typename T>
inline void fill_row_rates(const T* rate, T* rows, const SRWMDims& s) {
  if (s.n_beta == 1) {
    std::fill(rows, rows + s.R, rate[0]);
    return;
  }
  int64_t ends[4];
  block_ends(s, ends);
  for (int64_t i = 0, start = 0; i < 4; start = ends[i++])
    std::fill(rows + start, rows + ends[i], rate[i]);
}

// ∂σ(b) = Σ over the rows of each block of ∂u ⊙ (v − v̄); a, b padded to Rp with zeros.
template <typename T>
inline void block_dots(const T* a, const T* b, T* out, const SRWMDims& s) {
  if (s.n_beta == 1) {
    out[0] = dot(a, b, padded(s.R));
    return;
  }
  int64_t ends[4];
  block_ends(s, ends);
  for (int64_t i = 0, start = 0; i < 4; start = ends[i++])
    out[i] = dot(a + start, b + start, ends[i] - start);
}

}  // namespace

// The input of step t, a_t = x_t or softmax(x_t), into `buffer` (padded with zeros).
template <typename T>
inline const T* input_at(const SRWMDims& s, const T* x_t, T* buffer) {
  if (s.input_softmax)
    softmax(x_t, buffer, s.D);
  else
    copy(x_t, s.D, buffer);
  return buffer;
}

template <typename T>
void srwm_forward_kernel(const SRWMDims& s, const SRWMForward<T>& p) {
  const int64_t T_ = s.T, H = s.H, D = s.D, R = s.R, d_out = s.d_out, n_beta = s.n_beta;
  const int64_t Rp = padded(R), Dp = padded(D);
  at::parallel_for(0, s.B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> W(D * Rp), a(Dp, T(0)), out(Rp), pq_minus_pk(D), diff(Rp), rows(Rp, T(0)),
        u(Rp, T(0));
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      auto token_at = [&](int64_t t) { return (b * T_ + t) * H + h; };  // [B, T, H, ·]
      std::fill(W.begin(), W.end(), T(0));
      const T* w0 = p.W0 + b * p.W0_stride[0] + h * p.W0_stride[1];
      for (int64_t r = 0; r < R; ++r)
        for (int64_t d = 0; d < D; ++d) W[d * Rp + r] = w0[r * p.W0_stride[2] + d * p.W0_stride[3]];
      // out holds W_{t−1} a_t at the top of each step: the previous step's update computes it.
      combine_rows(W.data(), Rp, input_at(s, p.x + token_at(0) * D, a.data()), D, Rp, out.data());

      for (int64_t t = 0; t < T_; ++t) {
        const int64_t token = token_at(t);
        const int64_t saved = bh * T_ + t;  // saved vectors are [B, H, T, ·]
        if (t + kAhead < T_) {
          prefetch(p.x + token_at(t + kAhead) * D);
          prefetch(p.y + token_at(t + kAhead) * d_out);
        }
        // [y; k; q; b] = W a  (Eq. 2)
        copy(out.data(), d_out, p.y + token * d_out);
        T* pk = p.pk + saved * D;
        T* pq = p.pq + saved * D;
        T* rate = p.rate + saved * n_beta;
        softmax(out.data() + d_out, pk, D);
        softmax(out.data() + d_out + D, pq, D);
        const T scale = T(s.rate_scale);
        for (int64_t i = 0; i < n_beta; ++i) rate[i] = scale * sigmoid(out[d_out + 2 * D + i]);

        // v − v̄ = W φ(q) − W φ(k) = W (φ(q) − φ(k))  (Eq. 3): one product
        for (int64_t d = 0; d < D; ++d) pq_minus_pk[d] = pq[d] - pk[d];
        combine_rows(W.data(), Rp, pq_minus_pk.data(), D, Rp, diff.data());
        copy(diff.data(), R, p.diff + saved * R);

        // W_t = W + (σ(b) ⊙ (v − v̄)) ⊗ φ(k)  (Eq. 4), and in the same sweep W_t a_{t+1}
        fill_row_rates(rate, rows.data(), s);
        for (int64_t r = 0; r < Rp; ++r) u[r] = rows[r] * diff[r];
        if (t + 1 < T_) {
          const T* a_next = input_at(s, p.x + token_at(t + 1) * D, a.data());
          update_then_combine<T, false>(W.data(), Rp, pk, u.data(), nullptr, nullptr, a_next, D,
                                        Rp, out.data());
        } else {
          add_outer(W.data(), Rp, pk, u.data(), D, Rp);
        }
      }
      T* w_out = p.W_T + bh * R * D;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t d = 0; d < D; ++d) w_out[r * D + d] = W[d * Rp + r];
    }
  });
}

// One reverse step, with W = W_{t−1} rebuilt first and G = ∂L/∂W_t (see fwp/ops/srwm/scan.py):
//   ∂u = G φ(k),  ∂d = σ ⊙ ∂u,  ∂σ = Σ_block ∂u ⊙ d,  ∂φ(q) = Wᵀ ∂d,  ∂φ(k) = Gᵀ u − Wᵀ ∂d,
//   ∂a = Wᵀ ∂[y; k; q; b],  G ← G + ∂d ⊗ (φ(q) − φ(k)) + ∂[y; k; q; b] ⊗ a  (= ∂L/∂W_{t−1})
//
// The backward multiplies by Wᵀ only, so it keeps W row by row (Wr[r * Dp + d], Dp = D padded)
// where Wᵀ g = Σ_r g_r W[r, :] is again a combination of rows. G is multiplied both ways, so it
// is kept twice, column by column (Gc, for G φ(k)) and row by row (Gr, for Gᵀ u), and both copies
// take each rank-2 update: cheaper than the horizontal sums a single layout would need. Each
// update sweep also computes the next (earlier) step's product with the updated matrix.
template <typename T>
struct Step {
  std::vector<T> a, pk, minus_pk, pq_minus_pk, diff, rows, u;  // zero-padded
  const T *pq, *rate;

  Step(int64_t Dp, int64_t Rp)
      : a(Dp, T(0)), pk(Dp, T(0)), minus_pk(Dp, T(0)), pq_minus_pk(Dp, T(0)), diff(Rp, T(0)),
        rows(Rp, T(0)), u(Rp, T(0)) {}

  // Gathers step t's saved vectors; `saved` indexes [B, H, T, ·], x_t is the input row.
  void load(const SRWMDims& s, const SRWMBackward<T>& p, int64_t saved, const T* x_t) {
    const int64_t D = s.D, R = s.R;
    input_at(s, x_t, a.data());
    pq = p.pq + saved * D;
    rate = p.rate + saved * s.n_beta;
    copy(p.pk + saved * D, D, pk.data());
    for (int64_t d = 0; d < D; ++d) {
      minus_pk[d] = -pk[d];
      pq_minus_pk[d] = pq[d] - pk[d];
    }
    copy(p.diff + saved * R, R, diff.data());
    fill_row_rates(rate, rows.data(), s);
    for (size_t r = 0; r < u.size(); ++r) u[r] = rows[r] * diff[r];
  }
};

template <typename T>
void srwm_backward_kernel(const SRWMDims& s, const SRWMBackward<T>& p) {
  const int64_t T_ = s.T, H = s.H, D = s.D, R = s.R, d_out = s.d_out, n_beta = s.n_beta;
  const int64_t Rp = padded(R), Dp = padded(D);
  at::parallel_for(0, s.B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> Wr(R * Dp), Gc(D * Rp), Gr(R * Dp), grad_u(Rp), grad_Gu(Dp),
        grad_d(Rp, T(0)), grad_out(Rp, T(0)), grad_pq(Dp), grad_a(Dp), grad_rate(n_beta);
    Step<T> cur(Dp, Rp), next(Dp, Rp);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      auto token_at = [&](int64_t t) { return (b * T_ + t) * H + h; };
      std::fill(Wr.begin(), Wr.end(), T(0));
      std::fill(Gc.begin(), Gc.end(), T(0));
      std::fill(Gr.begin(), Gr.end(), T(0));
      const T* w_in = p.W_T + bh * R * D;
      const T* g_in = p.grad_W_T + bh * R * D;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t d = 0; d < D; ++d) {
          Wr[r * Dp + d] = w_in[r * D + d];
          Gr[r * Dp + d] = g_in[r * D + d];
          Gc[d * Rp + r] = g_in[r * D + d];
        }
      // At the top of step t: grad_u = G φ(k_t) and grad_Gu = Gᵀ u_t, with G = ∂L/∂W_t.
      cur.load(s, p, bh * T_ + T_ - 1, p.x + token_at(T_ - 1) * D);
      combine_rows(Gc.data(), Rp, cur.pk.data(), D, Rp, grad_u.data());
      combine_rows(Gr.data(), Dp, cur.u.data(), R, Dp, grad_Gu.data());

      for (int64_t t = T_ - 1; t >= 0; --t) {
        const int64_t token = token_at(t);
        if (t >= kAhead) {
          const int64_t ahead = token_at(t - kAhead);
          prefetch(p.x + ahead * D);
          prefetch(p.grad_y + ahead * d_out);
          prefetch(p.grad_x + ahead * D);
        }
        for (int64_t r = 0; r < Rp; ++r) grad_d[r] = grad_u[r] * cur.rows[r];
        block_dots(grad_u.data(), cur.diff.data(), grad_rate.data(), s);
        // W_{t−1} = W_t − u ⊗ φ(k), and with it ∂φ(q) = W_{t−1}ᵀ ∂d
        update_then_combine<T, false>(Wr.data(), Dp, cur.u.data(), cur.minus_pk.data(), nullptr,
                                      nullptr, grad_d.data(), R, Dp, grad_pq.data());

        // ∂[y; k; q; b]; its padding stays zero
        copy(p.grad_y + token * d_out, d_out, grad_out.data());
        T* grad_k = grad_out.data() + d_out;
        T* grad_q = grad_out.data() + d_out + D;
        for (int64_t d = 0; d < D; ++d) {
          grad_k[d] = grad_Gu[d] - grad_pq[d];
          grad_q[d] = grad_pq[d];
        }
        softmax_backward(cur.pk.data(), grad_k, D);
        softmax_backward(cur.pq, grad_q, D);
        // rate = s·σ(b): ∂b = ∂rate · s σ (1 − σ) = ∂rate · rate · (1 − rate / s)
        for (int64_t i = 0; i < n_beta; ++i)
          grad_out[d_out + 2 * D + i] =
              grad_rate[i] * cur.rate[i] * (T(1) - cur.rate[i] / T(s.rate_scale));
        combine_rows(Wr.data(), Dp, grad_out.data(), R, Dp, grad_a.data());  // Wᵀ ∂[y; k; q; b]
        if (s.input_softmax) softmax_backward(cur.a.data(), grad_a.data(), D);
        copy(grad_a.data(), D, p.grad_x + token * D);

        // G ← G + ∂d ⊗ (φ(q) − φ(k)) + ∂[y; k; q; b] ⊗ a in both copies, and with the new G
        // the products G φ(k_{t−1}) and Gᵀ u_{t−1} of the next step.
        if (t > 0) {
          next.load(s, p, bh * T_ + t - 1, p.x + token_at(t - 1) * D);
          update_then_combine<T, true>(Gc.data(), Rp, cur.pq_minus_pk.data(), grad_d.data(),
                                       cur.a.data(), grad_out.data(), next.pk.data(), D, Rp,
                                       grad_u.data());
          update_then_combine<T, true>(Gr.data(), Dp, grad_d.data(), cur.pq_minus_pk.data(),
                                       grad_out.data(), cur.a.data(), next.u.data(), R, Dp,
                                       grad_Gu.data());
          std::swap(cur, next);
        } else {
          add_outer(Gr.data(), Dp, grad_d.data(), cur.pq_minus_pk.data(), R, Dp);
          add_outer(Gr.data(), Dp, grad_out.data(), cur.a.data(), R, Dp);
        }
      }
      T* g_out = p.grad_W0 + bh * R * D;
      for (int64_t r = 0; r < R; ++r) copy(&Gr[r * Dp], D, g_out + r * D);
    }
  });
}

template void srwm_forward_kernel<float>(const SRWMDims&, const SRWMForward<float>&);
template void srwm_forward_kernel<double>(const SRWMDims&, const SRWMForward<double>&);
template void srwm_backward_kernel<float>(const SRWMDims&, const SRWMBackward<float>&);
template void srwm_backward_kernel<double>(const SRWMDims&, const SRWMBackward<double>&);

}  // namespace fwp
