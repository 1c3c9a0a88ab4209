// RAD CPU kernels: thin loops over the shared MMH_HD math of rad.h.
#include <ATen/Parallel.h>

#include <algorithm>
#include <torch/library.h>

#include "../rad.h"

namespace mmh_ext {
namespace rad {
namespace {

// Items per task so that one task holds ~16k scalar operations: tiny problems run inline, without waking threads.
int64_t grain(int64_t work_per_item) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, work_per_item)); }

void pool_cpu(const at::Tensor& feat, int64_t grid, at::Tensor& out) {
  const int64_t B = feat.size(0), C = feat.size(1), H = feat.size(2), W = feat.size(3), G2 = grid * grid;
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "rad_pool_cpu", [&] {
    using acc = acc_t<scalar_t>;
    const scalar_t* f = feat.const_data_ptr<scalar_t>();
    acc* o = out.mutable_data_ptr<acc>();
    const int64_t sb = feat.stride(0), sc = feat.stride(1), sh = feat.stride(2), sw = feat.stride(3);
    if (sc == 1) {  // channels_last: channels innermost, contiguous reads
      at::parallel_for(0, B * G2, grain(C * H * W / G2 + C), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
          for (int64_t c = 0; c < C; ++c)
            o[i * C + c] = pool_cell(f, sb, sc, sh, sw, H, W, grid, i / G2, c, i % G2);
      });
    } else {  // one plane at a time
      at::parallel_for(0, B * C, grain(H * W + G2), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t b = i / C, c = i % C;
          for (int64_t cell = 0; cell < G2; ++cell)
            o[(b * G2 + cell) * C + c] = pool_cell(f, sb, sc, sh, sw, H, W, grid, b, c, cell);
        }
      });
    }
  });
}

void forward_cpu(const at::Tensor& cs, const at::Tensor& ct, const at::Tensor& bs, const at::Tensor& bt,
                 const Pyramid& p, double temperature, at::Tensor& loss, at::Tensor& ls, at::Tensor& lt) {
  const int64_t B = cs.size(0), G2 = cs.size(1), K = cs.size(2), N = p.num_regions;
  AT_DISPATCH_FLOATING_TYPES(cs.scalar_type(), "rad_forward_cpu", [&] {
    const scalar_t inv_t = scalar_t(1) / static_cast<scalar_t>(temperature);
    const scalar_t t2 = static_cast<scalar_t>(temperature * temperature);
    const scalar_t *s = cs.const_data_ptr<scalar_t>(), *t = ct.const_data_ptr<scalar_t>();
    const scalar_t *b_s = bs.const_data_ptr<scalar_t>(), *b_t = bt.const_data_ptr<scalar_t>();
    scalar_t *l = loss.mutable_data_ptr<scalar_t>(), *os = ls.mutable_data_ptr<scalar_t>(),
             *ot = lt.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B * N, grain(2 * K * (G2 + 4)), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / N, n = i % N;
        const Rect r = region_rect(p, n);
        region_log_softmax(s + b * G2 * K, b_s, K, p.grid, r, inv_t, os + i * K);
        region_log_softmax(t + b * G2 * K, b_t, K, p.grid, r, inv_t, ot + i * K);
        l[i] = kl_from_logp(os + i * K, ot + i * K, K, t2);
      }
    });
  });
}

void backward_cpu(const at::Tensor& grad, const at::Tensor& ls, const at::Tensor& lt, double temperature,
                  at::Tensor& dzs, at::Tensor& dzt) {
  const int64_t BN = ls.size(0) * ls.size(1), K = ls.size(2);
  AT_DISPATCH_FLOATING_TYPES(ls.scalar_type(), "rad_backward_cpu", [&] {
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t *s = ls.const_data_ptr<scalar_t>(), *t = lt.const_data_ptr<scalar_t>();
    scalar_t* ds = dzs.defined() ? dzs.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* dt = dzt.defined() ? dzt.mutable_data_ptr<scalar_t>() : nullptr;
    const scalar_t temp = static_cast<scalar_t>(temperature);
    at::parallel_for(0, BN, grain(4 * K), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        region_kl_backward(s + i * K, t + i * K, K, g[i], temp, ds ? ds + i * K : nullptr, dt ? dt + i * K : nullptr);
    });
  });
}

void cells_cpu(const at::Tensor& dz, const Pyramid& p, at::Tensor& dcells) {
  const int64_t B = dz.size(0), N = dz.size(1), K = dz.size(2), G2 = p.grid * p.grid;
  AT_DISPATCH_FLOATING_TYPES(dz.scalar_type(), "rad_cells_cpu", [&] {
    const scalar_t* d = dz.const_data_ptr<scalar_t>();
    scalar_t* o = dcells.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B * G2, grain(K * N), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) cell_grad(d + (i / G2) * N * K, p, K, i % G2, o + i * K);
    });
  });
}

void unpool_cpu(const at::Tensor& dg, int64_t grid, at::Tensor& dfeat) {
  const int64_t B = dfeat.size(0), C = dfeat.size(1), H = dfeat.size(2), W = dfeat.size(3);
  AT_DISPATCH_FLOATING_TYPES(dfeat.scalar_type(), "rad_unpool_cpu", [&] {
    using acc = acc_t<scalar_t>;
    const acc* g = dg.const_data_ptr<acc>();
    scalar_t* o = dfeat.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B * C, grain(4 * H * W), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / C, c = i % C;
        scalar_t* plane = o + i * H * W;
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x)
            plane[y * W + x] = static_cast<scalar_t>(unpool_pixel(g, C, H, W, grid, b, c, y, x));
      }
    });
  });
}

const Kernels kCpu{pool_cpu, forward_cpu, backward_cpu, cells_cpu, unpool_cpu};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rad_forward_cpu(
    const at::Tensor& fs, const at::Tensor& ft, const at::Tensor& ws, const at::Tensor& bs, const at::Tensor& wt,
    const at::Tensor& bt, int64_t grid, at::IntArrayRef levels, double temperature) {
  return forward(fs, ft, ws, bs, wt, bt, grid, levels, temperature, kCpu);
}

std::vector<at::Tensor> rad_backward_cpu(const at::Tensor& grad, const at::Tensor& gs, const at::Tensor& gt,
                                         const at::Tensor& ls, const at::Tensor& lt, const at::Tensor& ws,
                                         const at::Tensor& wt, at::IntArrayRef shw, at::IntArrayRef thw, int64_t grid,
                                         at::IntArrayRef levels, double temperature, bool need_s, bool need_t) {
  return backward(grad, gs, gt, ls, lt, ws, wt, shw, thw, grid, levels, temperature, need_s, need_t, kCpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(mmh_ext, CPU, m) {
  m.impl("rad_forward", &rad_forward_cpu);
  m.impl("rad_backward", &rad_backward_cpu);
}

}  // namespace rad
}  // namespace mmh_ext
