// Small vector helpers shared by the fused CPU scans (srwm_cpu.cpp, delta_rule_cpu.cpp).
//
// Each (batch, head) pair keeps its fast-weight matrix in a local buffer whose rows are padded to
// a multiple of kPad entries (zeros), so every inner loop below runs over whole SIMD registers
// and the compiler needs no remainder loop. The padding stays zero through every update because
// the vectors that write into it are padded with zeros too.
#pragma once

#include <cmath>
#include <cstdint>

namespace fwp {

constexpr int64_t kPad = 16;

// Inputs are [B, T, H, ·]: one (batch, head) walks time in strides of H rows, which the hardware
// prefetcher does not follow, so each step asks for the rows kAhead steps away itself.
constexpr int64_t kAhead = 4;

inline void prefetch(const void* p) {
  __builtin_prefetch(p);
}

inline int64_t padded(int64_t n) {
  return (n + kPad - 1) / kPad * kPad;
}

// dst[0:n] = src[0:n] for the short vectors of one step, inlined (a call to memmove per
// vector costs more than the copy).
template <typename T>
inline void copy(const T* __restrict src, int64_t n, T* __restrict dst) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

// y += a x
template <typename T>
inline void axpy(T* __restrict y, T a, const T* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// Sum and maximum of kPad lanes, folded in halves (the compiler keeps them in registers; a loop
// over the halves, or an `omp simd reduction`, ends in one scalar add per lane).
template <typename T>
inline T fold_sum(T* lanes) {
  static_assert(kPad == 16, "the folds below are written for 16 lanes");
  for (int j = 0; j < 8; ++j) lanes[j] += lanes[j + 8];
  for (int j = 0; j < 4; ++j) lanes[j] += lanes[j + 4];
  for (int j = 0; j < 2; ++j) lanes[j] += lanes[j + 2];
  return lanes[0] + lanes[1];
}

template <typename T>
inline T fold_max(T* lanes) {
  for (int j = 0; j < 8; ++j) lanes[j] = lanes[j] > lanes[j + 8] ? lanes[j] : lanes[j + 8];
  for (int j = 0; j < 4; ++j) lanes[j] = lanes[j] > lanes[j + 4] ? lanes[j] : lanes[j + 4];
  for (int j = 0; j < 2; ++j) lanes[j] = lanes[j] > lanes[j + 2] ? lanes[j] : lanes[j + 2];
  return lanes[0] > lanes[1] ? lanes[0] : lanes[1];
}

// ⟨a, b⟩: whole blocks of kPad lanes, then a scalar tail.
template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  T lanes[kPad] = {};
  int64_t i = 0;
  for (; i + kPad <= n; i += kPad)
#pragma omp simd
    for (int64_t j = 0; j < kPad; ++j) lanes[j] += a[i + j] * b[i + j];
  for (; i < n; ++i) lanes[i % kPad] += a[i] * b[i];
  return fold_sum(lanes);
}

// out = Σ_c w_c M[c, :] = Mᵀ w over m rows of M (row stride ld), n a multiple of kPad: the
// product of every kernel. Each block of kPad outputs is accumulated in registers, in four
// independent chains (rows c mod 4) so that FMA latency does not serialise a long sum.
template <typename T>
inline void combine_rows(const T* M, int64_t ld, const T* w, int64_t m, int64_t n, T* out) {
  for (int64_t j0 = 0; j0 < n; j0 += kPad) {
    T acc0[kPad] = {}, acc1[kPad] = {}, acc2[kPad] = {}, acc3[kPad] = {};
    const T* col = M + j0;
    int64_t c = 0;
    for (; c + 4 <= m; c += 4) {
      const T w0 = w[c], w1 = w[c + 1], w2 = w[c + 2], w3 = w[c + 3];
      const T *r0 = col + c * ld, *r1 = r0 + ld, *r2 = r1 + ld, *r3 = r2 + ld;
#pragma omp simd
      for (int64_t j = 0; j < kPad; ++j) {
        acc0[j] += w0 * r0[j];
        acc1[j] += w1 * r1[j];
        acc2[j] += w2 * r2[j];
        acc3[j] += w3 * r3[j];
      }
    }
    for (; c < m; ++c) {
      const T wc = w[c];
      const T* row = col + c * ld;
#pragma omp simd
      for (int64_t j = 0; j < kPad; ++j) acc0[j] += wc * row[j];
    }
#pragma omp simd
    for (int64_t j = 0; j < kPad; ++j) out[j0 + j] = (acc0[j] + acc1[j]) + (acc2[j] + acc3[j]);
  }
}

// One row of update_then_combine: row += xc y (+ x2c y2), lanes += wc row.
template <typename T, bool kRank2>
inline void update_row(T* __restrict row, T xc, const T* y, T x2c, const T* y2, T wc,
                       T* __restrict lanes) {
#pragma omp simd
  for (int64_t j = 0; j < kPad; ++j) {
    T v = row[j] + xc * y[j];
    if constexpr (kRank2) v += x2c * y2[j];
    row[j] = v;
    lanes[j] += wc * v;
  }
}

// M[c, :] += x_c y (+ x2_c y2 if kRank2) for the m rows of M, and in the same sweep
// out = Σ_c w_c M[c, :] with the updated rows: an update followed by a product with the new
// matrix, reading M once instead of twice. n is a multiple of kPad; four accumulators per block
// as in combine_rows.
template <typename T, bool kRank2>
inline void update_then_combine(T* M, int64_t ld, const T* x, const T* y, const T* x2,
                                const T* y2, const T* w, int64_t m, int64_t n, T* out) {
  for (int64_t j0 = 0; j0 < n; j0 += kPad) {
    T acc0[kPad] = {}, acc1[kPad] = {}, acc2[kPad] = {}, acc3[kPad] = {};
    const T* y_b = y + j0;
    const T* y2_b = kRank2 ? y2 + j0 : nullptr;
    auto row = [&](int64_t c, T* lanes) {
      update_row<T, kRank2>(M + c * ld + j0, x[c], y_b, kRank2 ? x2[c] : T(0), y2_b, w[c],
                            lanes);
    };
    int64_t c = 0;
    for (; c + 4 <= m; c += 4) {
      row(c, acc0);
      row(c + 1, acc1);
      row(c + 2, acc2);
      row(c + 3, acc3);
    }
    for (; c < m; ++c) row(c, acc0);
#pragma omp simd
    for (int64_t j = 0; j < kPad; ++j) out[j0 + j] = (acc0[j] + acc1[j]) + (acc2[j] + acc3[j]);
  }
}

// M[c, :] += x_c y over m rows of M (row stride ld), n entries per row: a rank-1 update.
template <typename T>
inline void add_outer(T* M, int64_t ld, const T* x, const T* y, int64_t m, int64_t n) {
  for (int64_t c = 0; c < m; ++c) axpy(M + c * ld, x[c], y, n);
}

// e^x for the float kernels, inlined so that softmax loops vectorise (a libm call per entry
// costs as much as the matrix products of a step). Cephes' expf: x = n ln 2 + r with |r| ≤ ln2/2,
// e^r by a degree-6 polynomial, 2^n through the exponent bits; about 1 ulp on [−87, 88], the
// range it clamps to (softmax inputs are ≤ 0 after the shift; a sigmoid saturates long before).
inline float exp_inline(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float poly = 1.9875691500e-4f;
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  const float y = poly * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return y * __builtin_bit_cast(float, bits);  // GCC ≥ 11, clang ≥ 9; memcpy stops vectorising
}

// float64 is the checking precision: it keeps libm's exp.
inline double exp_inline(double x) {
  return std::exp(x);
}

// out = softmax(in) over n entries, in whole blocks of kPad lanes and a scalar tail.
template <typename T>
inline void softmax(const T* in, T* __restrict out, int64_t n) {
  T lanes[kPad];
  for (int64_t j = 0; j < kPad; ++j) lanes[j] = in[0];
  int64_t i = 0;
  for (; i + kPad <= n; i += kPad)
#pragma omp simd
    for (int64_t j = 0; j < kPad; ++j) lanes[j] = in[i + j] > lanes[j] ? in[i + j] : lanes[j];
  for (; i < n; ++i) lanes[0] = in[i] > lanes[0] ? in[i] : lanes[0];
  const T top = fold_max(lanes);

  for (int64_t j = 0; j < kPad; ++j) lanes[j] = 0;
  for (i = 0; i + kPad <= n; i += kPad)
#pragma omp simd
    for (int64_t j = 0; j < kPad; ++j) {
      const T e = exp_inline(in[i + j] - top);
      out[i + j] = e;
      lanes[j] += e;
    }
  for (; i < n; ++i) {
    out[i] = exp_inline(in[i] - top);
    lanes[0] += out[i];
  }
  const T inv = T(1) / fold_sum(lanes);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] *= inv;
}

// g ← J_softmax g = p ⊙ (g − ⟨g, p⟩), in place.
template <typename T>
inline void softmax_backward(const T* p, T* g, int64_t n) {
  const T s = dot(g, p, n);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) g[i] = p[i] * (g[i] - s);
}

template <typename T>
inline T sigmoid(T z) {
  return T(1) / (T(1) + exp_inline(-z));
}

}  // namespace fwp
