// RAD: the operators' schemas, the argument checks (the only ones: the Python API calls the op as it is), the
// device-independent part (GEMMs via ATen) and the autograd kernel; the kernels come from cpu/ or cuda/.
#include "rad.h"

#include "checks.h"
#include "library.h"

#include <ATen/Dispatch.h>
#include <ATen/TensorSubclassLikeUtils.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/custom_function.h>

#include <string>

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
  check_float_same_device({{&fs, "student_feat"},
                           {&ft, "teacher_feat"},
                           {&ws, "student_fc_weight"},
                           {&bs, "student_fc_bias"},
                           {&wt, "teacher_fc_weight"},
                           {&bt, "teacher_fc_bias"}});
  check_feat(fs, "student_feat");
  check_feat(ft, "teacher_feat");
  TORCH_CHECK_VALUE(fs.size(0) == ft.size(0), "student_feat has batch size ", fs.size(0), " but teacher_feat has ",
                    ft.size(0));
  check_fc(ws, bs, fs, "student_fc_weight", "student_fc_bias", "student_feat");
  check_fc(wt, bt, ft, "teacher_fc_weight", "teacher_fc_bias", "teacher_feat");
  TORCH_CHECK_VALUE(ws.size(0) == wt.size(0), "student_fc_weight has ", ws.size(0),
                    " classes but teacher_fc_weight has ", wt.size(0));
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
    return kmajor ? Gemm{at::empty({K, B * G2}, opts), as_dtype(w, acc), flat.t()}
                  : Gemm{at::empty({B * G2, K}, opts), flat, as_dtype(w, acc).t()};
  };
  std::vector<Gemm> jobs{cell_logits(gs, ws), cell_logits(gt, wt)};
  k.gemms(jobs, K);
  const auto cells = [&](const at::Tensor& out) { return (kmajor ? out.t() : out).view({B, G2, K}); };
  const at::Tensor cs = cells(jobs[0].out), ct = cells(jobs[1].out);
  k.forward(cs, ct, as_dtype(bs, acc).contiguous(), as_dtype(bt, acc).contiguous(), p, temperature, loss, ls, lt);
  return {loss, gs, gt, ls, lt};
}

std::vector<at::Tensor> backward(const at::Tensor& grad, const at::Tensor& gs, const at::Tensor& gt,
                                 const at::Tensor& ls, const at::Tensor& lt, const at::Tensor& ws, const at::Tensor& wt,
                                 at::IntArrayRef student_hw, at::IntArrayRef teacher_hw, at::ScalarType student_dtype,
                                 at::ScalarType teacher_dtype, int64_t grid, at::IntArrayRef levels, double temperature,
                                 bool need_student, bool need_teacher, const Kernels& k) {
  const Pyramid p = make_pyramid(grid, levels);
  TORCH_CHECK_VALUE(student_hw.size() == 2 && teacher_hw.size() == 2, "student_hw and teacher_hw must have 2 entries");
  const int64_t B = ls.size(0), G2 = grid * grid, K = ws.size(0);
  TORCH_CHECK_VALUE(grad.dim() == 2 && grad.size(0) == B && grad.size(1) == p.num_regions, "grad must have shape (", B,
                    ", ", p.num_regions, "), got ", grad.sizes());
  const auto acc = ls.scalar_type();
  const at::Tensor g = as_dtype(grad, acc);  // read through its strides (the gradient of a mean is an expanded scalar)
  at::Tensor none = at::empty({0}, ls.options());
  if (k.fused_backward != nullptr && need_student && !need_teacher && at::isFloatingType(student_dtype) &&
      (student_dtype == at::kDouble) == (acc == at::kDouble)) {
    const int64_t C = ws.size(1);
    at::Tensor df = at::empty({B, C, student_hw[0], student_hw[1]}, ls.options().dtype(student_dtype));
    at::Tensor dw = gs.numel() != 0 ? at::empty({K, C}, ls.options()) : at::Tensor();
    at::Tensor db = at::empty({K}, ls.options());
    if (k.fused_backward(g, gs, ls, lt, ws, p, temperature, df, dw, db))
      return {df, dw.defined() ? as_dtype(dw, ws.scalar_type()) : none, db, none, none, none};
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
    jobs.push_back({s.dg, dc2, as_dtype(s.w, acc)});
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
    out[s.first + 1] = s.pooled.numel() == 0 ? none : as_dtype(s.dw, s.w.scalar_type());
    out[s.first + 2] = db;
  }
  return out;
}

namespace {

// rad_loss's reduction: "none" -> (B, N), "region" -> (N,) batch means, "mean" -> the mean of all.
enum Reduction : int64_t { kNone = 0, kRegion = 1, kMean = 2 };

int64_t parse_reduction(c10::string_view reduction) {
  if (reduction == "none") return kNone;
  if (reduction == "region") return kRegion;
  TORCH_CHECK_VALUE(reduction == "mean", "reduction must be 'none', 'region' or 'mean', got '", std::string(reduction),
                    "'");
  return kMean;
}

using ForwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    int64_t, at::IntArrayRef, double);
using BackwardSig = std::vector<at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                            const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                            c10::SymIntArrayRef, c10::SymIntArrayRef, at::ScalarType, at::ScalarType,
                                            int64_t, at::IntArrayRef, double, bool, bool);

const c10::TypedOperatorHandle<ForwardSig>& forward_op() {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mmh_ext::rad_forward", "").typed<ForwardSig>();
  return op;
}

// A plain CPU tensor (not fake, functional or under a dispatch mode), contiguous: one a loop may read and write
// directly. Tiny calls then skip a TensorIterator, whose setup costs more than their arithmetic.
bool plain_cpu(const at::Tensor& t) { return t.is_cpu() && t.is_contiguous() && !at::isTensorSubclassLike(t); }

// The region losses (B, N) reduced as rad_loss's `reduction` says.
at::Tensor reduce(const at::Tensor& loss, int64_t reduction) {
  if (reduction == kRegion) return loss.mean(0);
  if (reduction == kNone) return loss;
  if (!plain_cpu(loss)) return loss.mean();
  at::Tensor out = at::empty({}, loss.options());
  AT_DISPATCH_FLOATING_TYPES(loss.scalar_type(), "rad_loss_mean", [&] {
    const scalar_t* l = loss.const_data_ptr<scalar_t>();
    double sum = 0;  // in double whatever the dtype: a float32 running sum over B N losses would drift
    for (int64_t i = 0, n = loss.numel(); i < n; ++i) sum += static_cast<double>(l[i]);
    *out.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(sum / static_cast<double>(loss.numel()));
  });
  return out;
}

// d region losses (B, N) from d loss of the reduction: grad / (B N) (mean) or grad / B (region), expanded (the
// kernels read the gradient through its strides: no (B, N) copy).
at::Tensor spread(const at::Tensor& grad, int64_t reduction, const c10::SymInt& b, const c10::SymInt& n) {
  if (reduction == kNone) return grad;
  const c10::SymInt count = reduction == kMean ? b * n : b;
  if (reduction == kMean && plain_cpu(grad) && !count.is_symbolic()) {
    at::Tensor g = at::empty({}, grad.options());
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "rad_loss_spread", [&] {
      *g.mutable_data_ptr<scalar_t>() = *grad.const_data_ptr<scalar_t>() / static_cast<scalar_t>(count.expect_int());
    });
    return g.expand_symint({b, n});
  }
  return grad.div(c10::Scalar(count)).expand_symint({b, n});
}

// rad_loss below autograd (no gradient wanted, or a traced graph's forward): rad_forward's kernel, reduced. A
// composite of rad_forward (CompositeExplicitAutograd): it runs wherever rad_forward has kernels.
at::Tensor loss_composite(const at::Tensor& fs, const at::Tensor& ft, const at::Tensor& ws, const at::Tensor& bs,
                          const at::Tensor& wt, const at::Tensor& bt, int64_t grid, at::IntArrayRef levels,
                          double temperature, c10::string_view reduction) {
  const int64_t r = parse_reduction(reduction);
  return reduce(std::get<0>(forward_op().call(fs, ft, ws, bs, wt, bt, grid, levels, temperature)), r);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmh_ext, m) {
  define_op(m,
            "rad_forward(Tensor student_feat, Tensor teacher_feat, Tensor student_fc_weight, Tensor student_fc_bias, "
            "Tensor teacher_fc_weight, Tensor teacher_fc_bias, int grid, int[] levels, float temperature) -> "
            "(Tensor loss, Tensor student_pooled, Tensor teacher_pooled, Tensor student_logp, Tensor teacher_logp)");
  define_op(m,
            "rad_backward(Tensor grad, Tensor student_pooled, Tensor teacher_pooled, Tensor student_logp, "
            "Tensor teacher_logp, Tensor student_fc_weight, Tensor teacher_fc_weight, SymInt[] student_hw, "
            "SymInt[] teacher_hw, ScalarType student_dtype, ScalarType teacher_dtype, int grid, int[] levels, "
            "float temperature, bool need_student, bool need_teacher) -> Tensor[]");
  // rad_forward's loss reduced in the same op: mmh_ext.rad_loss is one call and, with gradients, one autograd node
  // (a separate mean would be a second node, which cost a third of a tiny call's host time)
  define_op(m,
            "rad_loss(Tensor student_feat, Tensor teacher_feat, Tensor student_fc_weight, Tensor student_fc_bias, "
            "Tensor teacher_fc_weight, Tensor teacher_fc_bias, int grid, int[] levels, float temperature, "
            "str reduction) -> Tensor");
}

TORCH_LIBRARY_IMPL(mmh_ext, CompositeExplicitAutograd, m) { m.impl("rad_loss", &loss_composite); }

// Autograd of rad_forward and rad_loss, in C++ (as torchvision's csrc/ops/autograd/): one dispatcher call per forward
// and one per backward, no Python in between. (A Python torch.library.register_autograd formula costs more than the
// whole kernel at small and medium sizes: the generic wrapper rebuilds the schema's defaults and re-enters Python
// twice.) torch.compile traces through them like any C++ autograd kernel; rad_backward has a fake implementation for
// that.
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Runs rad_forward below autograd and saves what its backward needs; returns its outputs.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward_and_save(
    AutogradContext* ctx, const at::Tensor& fs, const at::Tensor& ft, const at::Tensor& ws, const at::Tensor& bs,
    const at::Tensor& wt, const at::Tensor& bt, int64_t grid, at::IntArrayRef levels, double temperature) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  auto out = forward_op().call(fs, ft, ws, bs, wt, bt, grid, levels, temperature);
  const auto& [loss, gs, gt, ls, lt] = out;
  ctx->set_materialize_grads(false);  // outputs without a gradient get none: no zeros are made for them
  // a network's pooled cells serve only its weight's gradient: not kept when that weight needs none (a frozen
  // teacher's 2 MiB at B = 64, C = 512, grid 4)
  const auto keep_pooled = [](const at::Tensor& pooled, const at::Tensor& w) {
    return w.requires_grad() ? pooled : at::empty({0}, pooled.options());
  };
  ctx->save_for_backward({keep_pooled(gs, ws), keep_pooled(gt, wt), ls, lt, ws, wt});
  // three entries (each is a hashed string key and an IValue: host time on every call): the integers — the dtypes of
  // student_feat, teacher_feat, student_fc_bias, teacher_fc_bias, the grid, then the levels —, both maps' H and W
  // (symbolic under torch.compile(dynamic=True)) and the temperature
  std::vector<int64_t> ints{static_cast<int64_t>(fs.scalar_type()), static_cast<int64_t>(ft.scalar_type()),
                            static_cast<int64_t>(bs.scalar_type()), static_cast<int64_t>(bt.scalar_type()), grid};
  ints.insert(ints.end(), levels.begin(), levels.end());
  ctx->saved_data["ints"] = std::move(ints);
  ctx->saved_data["hw"] = std::vector<c10::SymInt>{fs.sym_size(2), fs.sym_size(3), ft.sym_size(2), ft.sym_size(3)};
  ctx->saved_data["temperature"] = temperature;
  return out;
}

// The gradients of the six tensor inputs (undefined where none is needed), given d loss (B, N), read through its
// strides, and the saved tensors; `out` holds one entry per input of the op, the non-tensor ones left undefined.
void input_grads(AutogradContext* ctx, const at::Tensor& grad, const variable_list& saved, variable_list& out) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mmh_ext::rad_backward", "").typed<BackwardSig>();
  // inputs: student_feat, teacher_feat, student_w, student_b, teacher_w, teacher_b, then the non-tensor arguments
  const bool need_s = ctx->needs_input_grad(0) || ctx->needs_input_grad(2) || ctx->needs_input_grad(3);
  const bool need_t = ctx->needs_input_grad(1) || ctx->needs_input_grad(4) || ctx->needs_input_grad(5);
  if (!grad.defined() || !(need_s || need_t)) return;
  check_no_double_backward({grad}, saved, "mmh_ext.rad_loss", "mmh_ext.reference.rad_loss");
  const auto ints = ctx->saved_data["ints"].toIntVector();
  const auto dt = [&](int i) { return static_cast<at::ScalarType>(ints[i]); };
  const auto hw = ctx->saved_data["hw"].toSymIntVector();
  const c10::SymIntArrayRef shw(hw.data(), 2), thw(hw.data() + 2, 2);
  const at::IntArrayRef levels(ints.data() + 5, ints.size() - 5);
  std::vector<at::Tensor> g;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // no autograd of its own: straight to its kernel
    g = op.call(grad, saved[0], saved[1], saved[2], saved[3], saved[4], saved[5], shw, thw, dt(0), dt(1), ints[4],
                levels, ctx->saved_data["temperature"].toDouble(), need_s, need_t);
  }
  // g: d student_feat, d student_w, d student_b (acc dtype), d teacher_feat, d teacher_w, d teacher_b (acc dtype)
  const auto keep = [&](int input, const at::Tensor& t) { return ctx->needs_input_grad(input) ? t : at::Tensor(); };
  out[0] = keep(0, g[0]);
  out[2] = keep(2, g[1]);
  if (ctx->needs_input_grad(3)) out[3] = as_dtype(g[2], dt(2));  // d bias: from the acc dtype to the bias's
  out[1] = keep(1, g[3]);
  out[4] = keep(4, g[4]);
  if (ctx->needs_input_grad(5)) out[5] = as_dtype(g[5], dt(3));
}

class RadFunction : public torch::autograd::Function<RadFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& fs, const at::Tensor& ft, const at::Tensor& ws,
                               const at::Tensor& bs, const at::Tensor& wt, const at::Tensor& bt, int64_t grid,
                               at::IntArrayRef levels, double temperature) {
    auto [loss, gs, gt, ls, lt] = forward_and_save(ctx, fs, ft, ws, bs, wt, bt, grid, levels, temperature);
    ctx->mark_non_differentiable({gs, gt, ls, lt});
    return {loss, gs, gt, ls, lt};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(9);  // the six tensors, grid, levels, temperature
    input_grads(ctx, grads[0], ctx->get_saved_variables(), out);
    return out;
  }
};

// rad_loss: rad_forward and the reduction in one autograd node; its backward spreads d loss over the (B, N) region
// losses as a strided view (the kernels read the gradient through its strides: no (B, N) copy).
class RadLossFunction : public torch::autograd::Function<RadLossFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& fs, const at::Tensor& ft, const at::Tensor& ws,
                            const at::Tensor& bs, const at::Tensor& wt, const at::Tensor& bt, int64_t grid,
                            at::IntArrayRef levels, double temperature, c10::string_view reduction) {
    const int64_t r = parse_reduction(reduction);
    const at::Tensor loss = std::get<0>(forward_and_save(ctx, fs, ft, ws, bs, wt, bt, grid, levels, temperature));
    ctx->saved_data["reduction"] = r;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return reduce(loss, r);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(10);  // the six tensors, grid, levels, temperature, reduction
    const variable_list saved = ctx->get_saved_variables();
    at::Tensor g = grads[0];
    if (g.defined()) {
      // student log-probabilities (B, N, K)
      g = spread(g, ctx->saved_data["reduction"].toInt(), saved[2].sym_size(0), saved[2].sym_size(1));
    }
    input_grads(ctx, g, saved, out);
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rad_forward_autograd(
    const at::Tensor& fs, const at::Tensor& ft, const at::Tensor& ws, const at::Tensor& bs, const at::Tensor& wt,
    const at::Tensor& bt, int64_t grid, at::IntArrayRef levels, double temperature) {
  auto out = RadFunction::apply(fs, ft, ws, bs, wt, bt, grid, levels, temperature);
  return {out[0], out[1], out[2], out[3], out[4]};
}

at::Tensor rad_loss_autograd(const at::Tensor& fs, const at::Tensor& ft, const at::Tensor& ws, const at::Tensor& bs,
                             const at::Tensor& wt, const at::Tensor& bt, int64_t grid, at::IntArrayRef levels,
                             double temperature, c10::string_view reduction) {
  return RadLossFunction::apply(fs, ft, ws, bs, wt, bt, grid, levels, temperature, reduction);
}

}  // namespace

TORCH_LIBRARY_IMPL(mmh_ext, Autograd, m) {
  m.impl("rad_forward", &rad_forward_autograd);
  m.impl("rad_loss", &rad_loss_autograd);
}

}  // namespace rad
}  // namespace mmh_ext
