// Discrepancy-aware distillation (DAD), per-row math: batched cosine discrepancy matrices and their distillation loss.
//
// For features H (B x D, each sample flattened) the Gram matrix G = H H^T is the only pass over H (one GEMM); the row
// norms come from its diagonal, so no normalised copy of H is ever materialised. The backward pass is one GEMM too:
// dH = (dG + dG^T) H.
//   "paper": m_i = max(sqrt(G_ii), eps), D_ij = 1/2 - 1/2 * G_ij / (m_i m_j), loss = ||D_s - D_t||_F.
//   "sp"   : r_i = max(||G_i,:||_2, eps), M_ij = G_ij / r_i, loss = mean((M_s - M_t)^2) over the B x B entries.
// This header: the per-row __host__ __device__ math (MMH_HD), no ATen. The functions below are the whole B x B math:
// the CUDA kernels (cuda/dad.cu, one thread per row) and the CPU kernels (cpu/dad.cpp, rows in parallel) both call
// them. The host API (validation, the Gram GEMMs, the kernel table) is dad.h.
#pragma once

#include "common.h"

namespace mmh_ext {
namespace dad {

enum Form : int64_t { kPaper = 0, kSp = 1 };

// Row i of the matrix M (paper: the discrepancy D; sp: the row-normalised Gram) and the row's norm, from G.
// For "paper" the norms of all rows are needed: `norm` must already hold them (see row_norm).
template <typename acc>
MMH_HD acc row_norm(const acc* G, int64_t B, int64_t i, int64_t form, acc eps) {
  acc v;
  if (form == kPaper) {
    v = G[i * B + i];
    v = v > acc(0) ? mmh_sqrt(v) : acc(0);
  } else {
    acc s = acc(0);
    for (int64_t j = 0; j < B; ++j) s += G[i * B + j] * G[i * B + j];
    v = mmh_sqrt(s);
  }
  return mmh_max(v, eps);
}

template <typename acc>
MMH_HD void matrix_row(const acc* G, const acc* norm, int64_t B, int64_t i, int64_t form, acc* out) {
  if (form == kPaper) {
    for (int64_t j = 0; j < B; ++j) out[j] = acc(0.5) - acc(0.5) * G[i * B + j] / (norm[i] * norm[j]);
  } else {
    for (int64_t j = 0; j < B; ++j) out[j] = G[i * B + j] / norm[i];
  }
}

// Row i of dG = dL/dG from dM = dL/dM (M, norm as produced above). An entry's norm counts as clamped when it equals
// eps (then it is a constant and passes no gradient).
template <typename acc>
MMH_HD void gram_grad_row(const acc* dM, const acc* M, const acc* norm, int64_t B, int64_t i, int64_t form, acc eps,
                          acc* out) {
  if (form == kPaper) {
    // cos = 1 - 2 D, dcos = -dD / 2; dG_ij = dcos_ij / (m_i m_j);
    // dm_i = -sum_j (dcos_ij cos_ij + dcos_ji cos_ji) / m_i;  dG_ii += dm_i / (2 m_i) when m_i is not clamped.
    acc dm = acc(0);
    for (int64_t j = 0; j < B; ++j) {
      const acc dcij = acc(-0.5) * dM[i * B + j], dcji = acc(-0.5) * dM[j * B + i];
      const acc cij = acc(1) - acc(2) * M[i * B + j], cji = acc(1) - acc(2) * M[j * B + i];
      out[j] = dcij / (norm[i] * norm[j]);
      dm -= dcij * cij + dcji * cji;
    }
    if (norm[i] > eps) out[i] += dm / (acc(2) * norm[i] * norm[i]);
  } else {
    // M_ij = G_ij / r_i, r_i = ||G_i||: dG_ij = (dM_ij - M_ij * sum_k dM_ik M_ik) / r_i (second term when unclamped).
    acc dot = acc(0);
    if (norm[i] > eps)
      for (int64_t k = 0; k < B; ++k) dot += dM[i * B + k] * M[i * B + k];
    for (int64_t j = 0; j < B; ++j) out[j] = (dM[i * B + j] - M[i * B + j] * dot) / norm[i];
  }
}

}  // namespace dad
}  // namespace mmh_ext
