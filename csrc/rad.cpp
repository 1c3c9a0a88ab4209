// RAD: validation and the device-independent part (GEMMs via ATen); the kernels come from cpu/ or cuda/.
#include "rad.h"

#include "checks.h"

#include <c10/util/Exception.h>

namespace mmh_ext {
namespace rad {

namespace {

void check_feat(const at::Tensor& f, const char* name) {
  TORCH_CHECK_VALUE(f.dim() == 4, name, " must be 4-D (B, C, H, W), got shape ", f.sizes());
  TORCH_CHECK_VALUE(f.size(0) > 0, name, " has an empty batch (B = 0)");
  TORCH_CHECK_VALUE(f.size(1) > 0 && f.size(2) > 0 && f.size(3) > 0, name, " has an empty dimension: ", f.sizes());
}

void check_fc(const at::Tensor& w, const at::Tensor& b, const at::Tensor& feat, const char* wname, const char* bname,
              const char* fname) {
  TORCH_CHECK_VALUE(w.dim() == 2, wname, " must be 2-D (K, C), got shape ", w.sizes());
  TORCH_CHECK_VALUE(w.size(1) == feat.size(1), wname, " has ", w.size(1), " input features but ", fname, " has ",
                    feat.size(1), " channels");
  TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == w.size(0), bname, " must have shape (", w.size(0), ",), got ",
                    b.sizes());
}

}  // namespace

Pyramid make_pyramid(int64_t grid, at::IntArrayRef levels) {
  TORCH_CHECK_VALUE(grid >= 1, "grid must be >= 1, got ", grid);
  TORCH_CHECK_VALUE(!levels.empty(), "levels must not be empty");
  TORCH_CHECK_VALUE(static_cast<int64_t>(levels.size()) <= kMaxLevels, "levels: at most ", kMaxLevels,
                    " levels are supported, got ", levels.size());
  Pyramid p{};
  p.grid = grid;
  p.num_levels = static_cast<int64_t>(levels.size());
  p.num_regions = 0;
  for (size_t i = 0; i < levels.size(); ++i) {
    TORCH_CHECK_VALUE(levels[i] >= 1 && levels[i] <= grid, "levels[", i, "] = ", levels[i],
                      " must be between 1 and grid = ", grid);
    p.levels[i] = levels[i];
    p.num_regions += levels[i] * levels[i];
  }
  return p;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(
    const at::Tensor& fs, const at::Tensor& ft, const at::Tensor& ws, const at::Tensor& bs, const at::Tensor& wt,
    const at::Tensor& bt, int64_t grid, at::IntArrayRef levels, double temperature, const Kernels& k) {
  check_float_same_device({{&fs, "student_feat"}, {&ft, "teacher_feat"}, {&ws, "student_fc_weight"},
                    {&bs, "student_fc_bias"}, {&wt, "teacher_fc_weight"}, {&bt, "teacher_fc_bias"}});
  check_feat(fs, "student_feat");
  check_feat(ft, "teacher_feat");
  TORCH_CHECK_VALUE(fs.size(0) == ft.size(0), "student_feat has batch size ", fs.size(0), " but teacher_feat has ",
                    ft.size(0));
  check_fc(ws, bs, fs, "student_fc_weight", "student_fc_bias", "student_feat");
  check_fc(wt, bt, ft, "teacher_fc_weight", "teacher_fc_bias", "teacher_feat");
  TORCH_CHECK_VALUE(ws.size(0) == wt.size(0), "student_fc_weight has ", ws.size(0), " classes but teacher_fc_weight has ",
                    wt.size(0));
  TORCH_CHECK_VALUE(ws.size(0) >= 2, "the classifiers need at least 2 classes, got ", ws.size(0));
  TORCH_CHECK_VALUE(temperature > 0 && std::isfinite(temperature), "temperature must be a positive finite number, got ",
                    temperature);
  const Pyramid p = make_pyramid(grid, levels);

  const int64_t B = fs.size(0), K = ws.size(0), G2 = grid * grid;
  // Mixed dtypes (torch.autocast: half/bfloat16 features, float32 classifiers): everything is computed in the
  // accumulation dtype — float32, or float64 when any input is float64. The pooling kernels read float16/bfloat16
  // feature maps as they are (no float32 copy); only a float64 computation converts lower-precision features first.
  const auto acc = acc_dtype({&fs, &ft, &ws, &bs, &wt, &bt});
  auto opts = fs.options().dtype(acc);
  at::Tensor gs = at::empty({B, G2, fs.size(1)}, opts);
  at::Tensor gt = at::empty({B, G2, ft.size(1)}, opts);
  at::Tensor loss = at::empty({B, p.num_regions}, opts);
  at::Tensor ls = at::empty({B, p.num_regions, K}, opts);
  at::Tensor lt = at::empty({B, p.num_regions, K}, opts);
  if (k.fused_forward != nullptr && k.fused_forward(fs, ft, ws, bs, wt, bt, p, temperature, loss, gs, gt, ls, lt))
    return {loss, gs, gt, ls, lt};
  k.pool(acc == at::kDouble ? fs.to(acc) : fs, grid, gs);
  k.pool(acc == at::kDouble ? ft.to(acc) : ft, grid, gt);
  // Per-cell logits without bias: one GEMM per network, in the orientation the device's kernels ask for.
  const bool kmajor = k.kmajor_cells(K);
  const auto cell_logits = [&](const at::Tensor& pooled, const at::Tensor& w) {
    const at::Tensor flat = pooled.view({B * G2, pooled.size(2)});
    return kmajor ? Gemm{at::empty({K, B * G2}, opts), w.to(acc), flat.t()}
                  : Gemm{at::empty({B * G2, K}, opts), flat, w.to(acc).t()};
  };
  std::vector<Gemm> jobs{cell_logits(gs, ws), cell_logits(gt, wt)};
  k.gemms(jobs, K);
  const auto cells = [&](const at::Tensor& out) { return (kmajor ? out.t() : out).view({B, G2, K}); };
  const at::Tensor cs = cells(jobs[0].out), ct = cells(jobs[1].out);
  k.forward(cs, ct, bs.to(acc).contiguous(), bt.to(acc).contiguous(), p, temperature, loss, ls, lt);
  return {loss, gs, gt, ls, lt};
}

std::vector<at::Tensor> backward(const at::Tensor& grad, const at::Tensor& gs, const at::Tensor& gt,
                                 const at::Tensor& ls, const at::Tensor& lt, const at::Tensor& ws,
                                 const at::Tensor& wt, at::IntArrayRef student_hw, at::IntArrayRef teacher_hw,
                                 at::ScalarType student_dtype, at::ScalarType teacher_dtype, int64_t grid,
                                 at::IntArrayRef levels, double temperature, bool need_student, bool need_teacher,
                                 const Kernels& k) {
  const Pyramid p = make_pyramid(grid, levels);
  TORCH_CHECK_VALUE(student_hw.size() == 2 && teacher_hw.size() == 2, "student_hw and teacher_hw must have 2 entries");
  const int64_t B = ls.size(0), G2 = grid * grid, K = ws.size(0);
  TORCH_CHECK_VALUE(grad.dim() == 2 && grad.size(0) == B && grad.size(1) == p.num_regions, "grad must have shape (", B,
                    ", ", p.num_regions, "), got ", grad.sizes());
  const auto acc = ls.scalar_type();
  const at::Tensor g = grad.to(acc);  // read through its strides (the gradient of a mean is an expanded scalar)
  at::Tensor none = at::empty({0}, ls.options());
  if (k.fused_backward != nullptr && need_student && !need_teacher && at::isFloatingType(student_dtype) &&
      (student_dtype == at::kDouble) == (acc == at::kDouble)) {
    const int64_t C = ws.size(1);
    at::Tensor df = at::empty({B, C, student_hw[0], student_hw[1]}, ls.options().dtype(student_dtype));
    at::Tensor dw = gs.numel() != 0 ? at::empty({K, C}, ls.options()) : at::Tensor();
    at::Tensor db = at::empty({K}, ls.options());
    if (k.fused_backward(g, gs, ls, lt, ws, p, temperature, df, dw, db))
      return {df, dw.defined() ? dw.to(ws.scalar_type()) : none, db, none, none, none};
  }
  at::Tensor dcs, dct;
  if (need_student) dcs = at::empty({B, G2, K}, ls.options());
  at::Tensor kl;  // per (sample, region), for the teacher side's gradient: once per row, not once per cell and class
  if (need_teacher) {
    dct = at::empty({B, G2, K}, ls.options());
    kl = at::sub(lt, ls).mul_(lt.exp()).sum(-1);
  }
  k.cell_grads(g, ls, lt, kl, p, temperature, dcs, dct);

  // Each gradient in its input's dtype: d feat in the feature dtype (written directly by the unpooling kernel from the
  // accumulation dtype), d weight in the weight's dtype; d bias stays in the accumulation dtype (the Python API casts
  // it to the bias dtype, which the op does not see). `pooled` is empty when the weight needs no gradient (the
  // forward then does not keep it): d weight is empty too.
  struct Side {
    at::Tensor dcells, pooled, w;
    at::IntArrayRef hw;
    at::ScalarType feat_dtype;
    const char* name;
    int first;  // index of its d feat in the output
    at::Tensor dw, dg;
  };
  std::vector<Side> sides;
  if (need_student) sides.push_back({dcs, gs, ws, student_hw, student_dtype, "student_dtype", 0});
  if (need_teacher) sides.push_back({dct, gt, wt, teacher_hw, teacher_dtype, "teacher_dtype", 3});
  std::vector<Gemm> jobs;
  for (Side& s : sides) {
    TORCH_CHECK_TYPE(at::isFloatingType(s.feat_dtype), s.name, " must be a floating-point dtype, got ", s.feat_dtype);
    const int64_t C = s.w.size(1);
    const at::Tensor dc2 = s.dcells.view({B * G2, K});
    s.dg = at::empty({B * G2, C}, ls.options());
    jobs.push_back({s.dg, dc2, s.w.to(acc)});
    if (s.pooled.numel() != 0) {
      s.dw = at::empty({K, C}, ls.options());
      jobs.push_back({s.dw, dc2.t(), s.pooled.view({B * G2, C})});
    }
  }
  k.gemms(jobs, K);
  std::vector<at::Tensor> out(6, none);
  for (Side& s : sides) {
    const int64_t C = s.w.size(1);
    // d bias = sum over (sample, region) of d region logits = sum over (sample, cell) of d cell logits (the cells of
    // a region carry 1/area of its gradient each)
    at::Tensor db = s.dcells.sum(at::IntArrayRef{0, 1});
    // The kernels write a feature dtype whose accumulation dtype is `acc`; a float32/half feature of a float64
    // computation is unpooled in float64 and converted.
    const bool direct = (s.feat_dtype == at::kDouble) == (acc == at::kDouble);
    at::Tensor df = at::empty({B, C, s.hw[0], s.hw[1]}, ls.options().dtype(direct ? s.feat_dtype : acc));
    k.unpool(s.dg.view({B, G2, C}), grid, df);
    if (!direct) df = df.to(s.feat_dtype);
    out[s.first] = df;
    out[s.first + 1] = s.pooled.numel() == 0 ? none : s.dw.to(s.w.scalar_type());
    out[s.first + 2] = db;
  }
  return out;
}

}  // namespace rad
}  // namespace mmh_ext
