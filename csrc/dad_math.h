// Discrepancy-aware distillation (DAD), per-item math: batched cosine discrepancy matrices and their distillation loss.
//
// For features H (B x D, each sample flattened) the Gram matrix G = H H^T is the only pass over H (one GEMM); the row
// norms come from its diagonal, so no normalised copy of H is ever materialised. The backward pass is one GEMM too:
// dH = S H with S = dG + dG^T (symmetric; the kernels write S directly).
//   "paper": m_i = max(sqrt(G_ii), eps), D_ij = 1/2 - 1/2 * G_ij / (m_i m_j), loss = ||D_s - D_t||_F.
//   "sp"   : r_i = max(||G_i,:||_2, eps), M_ij = G_ij / r_i, loss = mean((M_s - M_t)^2) over the B x B entries.
// This header: the __host__ __device__ math (MMH_HD), no ATen. The functions below are the whole B x B math, split into
// row reductions (a sum of per-entry terms, then a finishing step) and per-entry functions: the CUDA kernels
// (cuda/dad.cu: a warp per row for the reductions, a thread per entry) and the CPU kernels (cpu/dad.cpp, rows in
// parallel, the serial *_row helpers below) both call them. The host API (validation, the Gram GEMMs, the kernel
// table) is dad.h.
#pragma once

#include "common.h"

namespace mmh_ext {
namespace dad {

enum Form : int64_t { kPaper = 0, kSp = 1 };

// ---- forward: norms and the matrix

// Term j of the sum under row i's norm: "sp" sums G_ij^2 over j; "paper" takes G_ii alone (no sum: see row_norm_arg).
template <typename acc>
MMH_HD acc norm_term(acc g) {
  return g * g;
}

// The clamped norm from its argument s (paper: G_ii; sp: sum_j G_ij^2).
template <typename acc>
MMH_HD acc norm_from(acc s, acc eps) {
  return mmh_max(s > acc(0) ? mmh_sqrt(s) : acc(0), eps);
}

// Row i's norm, serially (the CPU kernels; the CUDA kernel sums the terms across a warp).
template <typename acc>
MMH_HD acc row_norm(const acc* G, int64_t B, int64_t i, int64_t form, acc eps) {
  if (form == kPaper) return norm_from(G[i * B + i], eps);
  acc s = acc(0);
  for (int64_t j = 0; j < B; ++j) s += norm_term(G[i * B + j]);
  return norm_from(s, eps);
}

// Entry (i, j) of the matrix M (paper: the discrepancy D; sp: the row-normalised Gram) from G_ij and the norms of
// rows i and j (sp does not use norm_j).
template <typename acc>
MMH_HD acc matrix_entry(acc g, acc norm_i, acc norm_j, int64_t form) {
  return form == kPaper ? acc(0.5) - acc(0.5) * g / (norm_i * norm_j) : g / norm_i;
}

// ---- forward: the loss

// Term of the loss's sum for one entry of the two matrices.
template <typename acc>
MMH_HD acc loss_term(acc ms, acc mt) {
  const acc d = ms - mt;
  return d * d;
}

// The loss from the sum of loss_term over the B x B entries.
template <typename acc>
MMH_HD acc loss_from(acc sum, int64_t B, int64_t form) {
  return form == kPaper ? mmh_sqrt(sum) : sum / static_cast<acc>(B * B);
}

// ---- backward: dL/dM
//
// The gradient functions read dL/dM through an accessor: `GivenGrad` (cosine_discrepancy's incoming gradient) or
// `LossGrad` (the DAD loss's, computed on the fly from the two matrices, so it is never materialised).

template <typename acc>
struct GivenGrad {
  const acc* dM;
  int64_t B;
  MMH_HD acc operator()(int64_t i, int64_t j) const { return dM[i * B + j]; }
};

// dL/dM_s = scale * (M_s - M_t) and dL/dM_t = -scale * (M_s - M_t), `scale` from loss_grad_scale.
template <typename acc>
struct LossGrad {
  const acc* Ms;
  const acc* Mt;
  acc scale;
  int64_t B;
  MMH_HD acc operator()(int64_t i, int64_t j) const { return scale * (Ms[i * B + j] - Mt[i * B + j]); }
};

// The factor of LossGrad from the incoming gradient `grad` and the loss; sign +1 for the student, -1 for the teacher.
// paper: d||X||_F / dX = X / ||X||, taken as 0 where the norm is 0 (the two matrices agree: B = 1, identical features);
// sp: d mean(X^2) / dX = 2 X / B^2.
template <typename acc>
MMH_HD acc loss_grad_scale(acc grad, acc loss, int64_t B, int64_t form, acc eps, acc sign) {
  if (form == kPaper) return loss > acc(0) ? sign * (grad / mmh_max(loss, eps)) : acc(0);
  return sign * (grad * acc(2) / static_cast<acc>(B * B));
}

// What a kernel is handed for LossGrad: the incoming gradient and the loss by address (device memory in a CUDA kernel:
// the scale is computed there, without a host sync).
template <typename acc>
struct LossGradSource {
  const acc* Ms;
  const acc* Mt;
  const acc* grad;
  const acc* loss;
  acc sign;
};

// The accessor of dL/dM from what the kernel was handed.
template <typename acc>
MMH_HD GivenGrad<acc> grad_accessor(const GivenGrad<acc>& src, int64_t, int64_t, acc) {
  return src;
}
template <typename acc>
MMH_HD LossGrad<acc> grad_accessor(const LossGradSource<acc>& src, int64_t B, int64_t form, acc eps) {
  return {src.Ms, src.Mt, loss_grad_scale(*src.grad, *src.loss, B, form, eps, src.sign), B};
}

// ---- backward: S = dG + dG^T from dL/dM
//
// paper: cos = 1 - 2 D, dcos = -dD / 2; dG_ij = dcos_ij / (m_i m_j) + [i = j] dm_i / (2 m_i^2), the second term when
//        m_i is not clamped (an entry's norm counts as clamped when it equals eps: a constant, no gradient), with
//        dm_i = -sum_j (dcos_ij cos_ij + dcos_ji cos_ji) / m_i (the row reduction, times m_i).
// sp:    M_ij = G_ij / r_i, r_i = ||G_i||: dG_ij = (dM_ij - M_ij dot_i) / r_i, dot_i = sum_k dM_ik M_ik the row
//        reduction (0 when r_i is clamped).

// Term j of row i's reduction.
template <typename acc, typename DM>
MMH_HD acc grad_row_term(const DM& dM, const acc* M, int64_t B, int64_t i, int64_t j, int64_t form) {
  if (form == kPaper) {
    const acc dcij = acc(-0.5) * dM(i, j), dcji = acc(-0.5) * dM(j, i);
    const acc cij = acc(1) - acc(2) * M[i * B + j], cji = acc(1) - acc(2) * M[j * B + i];
    return -(dcij * cij + dcji * cji);
  }
  return dM(i, j) * M[i * B + j];
}

// Row i's reduction from the sum of its terms.
template <typename acc>
MMH_HD acc grad_row_from(acc sum, acc norm_i, int64_t form, acc eps) {
  return form == kPaper || norm_i > eps ? sum : acc(0);
}

// Row i's reduction, serially (the CPU kernels).
template <typename acc, typename DM>
MMH_HD acc grad_row(const DM& dM, const acc* M, const acc* norm, int64_t B, int64_t i, int64_t form, acc eps) {
  acc s = acc(0);
  for (int64_t j = 0; j < B; ++j) s += grad_row_term(dM, M, B, i, j, form);
  return grad_row_from(s, norm[i], form, eps);
}

// Entry (i, j) of S = dG + dG^T, from the norms and row reductions of rows i and j (paper uses red_i only, and only on
// the diagonal; red_j may be anything there).
template <typename acc, typename DM>
MMH_HD acc sym_grad_entry(const DM& dM, const acc* M, int64_t B, int64_t i, int64_t j, acc norm_i, acc norm_j,
                          acc red_i, acc red_j, int64_t form, acc eps) {
  if (form == kPaper) {
    acc s = (acc(-0.5) * dM(i, j) + acc(-0.5) * dM(j, i)) / (norm_i * norm_j);
    if (i == j && norm_i > eps) s += red_i / (norm_i * norm_i);
    return s;
  }
  return (dM(i, j) - M[i * B + j] * red_i) / norm_i + (dM(j, i) - M[j * B + i] * red_j) / norm_j;
}

}  // namespace dad
}  // namespace mmh_ext
