// C++ smoke test: load libmmh_ext_ops like a C++ deployment would and call every operator through the dispatcher on
// the CPU, checking the results against plain ATen computations.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <dlfcn.h>

#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

namespace {

int failures = 0, checks = 0;

void expect(bool ok, const std::string& what) {
  ++checks;
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

c10::OperatorHandle op(const char* name) { return c10::Dispatcher::singleton().findSchemaOrThrow(name, ""); }

}  // namespace

int main() {
  if (dlopen(MMH_EXT_OPS_LIBRARY, RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::printf("FAIL cannot load %s: %s\n", MMH_EXT_OPS_LIBRARY, dlerror());
    return 1;
  }
  at::manual_seed(0);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);

  // build_info
  auto info = op("mmh_ext::build_info").typed<std::string()>().call();
  expect(info.find("cpu_kernels=1") != std::string::npos, "build_info reports CPU kernels");

  // every operator the library registers (read from the dispatcher: no list here) has its CPU and Autocast kernels;
  // the test hooks are in mmh_ext_testing, not in the public namespace
  int tensor_ops = 0;
  for (const c10::OperatorName& name : c10::Dispatcher::singleton().getAllOpNames()) {
    const std::string ns = name.getNamespace().has_value() ? std::string(*name.getNamespace()) : "";
    if (ns == "mmh_ext") expect(name.name.find("::_") == std::string::npos, name.name + " is not a test hook");
    if (ns != "mmh_ext") continue;
    const auto handle = c10::Dispatcher::singleton().findOp(name);
    bool has_tensor = false;
    for (const auto& a : handle->schema().arguments())
      has_tensor = has_tensor || a.type()->kind() == c10::TypeKind::TensorType;
    if (!has_tensor) continue;
    ++tensor_ops;
    expect((handle->hasKernelForDispatchKey(c10::DispatchKey::CPU) ||
            handle->hasKernelForDispatchKey(c10::DispatchKey::CompositeExplicitAutograd)) &&
               handle->hasKernelForDispatchKey(c10::DispatchKey::AutocastCPU),
           name.name + " has CPU (or composite) and AutocastCPU kernels");
  }
  expect(tensor_ops >= 8, "the operators are registered (" + std::to_string(tensor_ops) + ")");
  expect(c10::Dispatcher::singleton().findOp({"mmh_ext_testing::rad_cpu_fused_passes", ""}).has_value(),
         "the test hooks are in mmh_ext_testing");

  // cross_stream_inject + backward
  at::Tensor x = at::randn({2, 3, 4, 5}, f64), g = at::randn({2, 3, 4, 5}, f64), d = at::randn({2, 3, 4, 5}, f64);
  auto inject = op("mmh_ext::cross_stream_inject").typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  expect(at::allclose(inject.call(x, g), x * at::relu(g)), "cross_stream_inject == x * relu(gate)");
  auto inject_bw =
      op("mmh_ext::cross_stream_inject_backward")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  auto [dx, dg] = inject_bw.call(d, x, g);
  expect(at::allclose(dx, d * at::relu(g)) && at::allclose(dg, at::where(g > 0, d * x, at::zeros_like(x))),
         "cross_stream_inject_backward");

  // rad_forward against pooling + linear + KL written with ATen
  const int64_t B = 3, Cs = 5, Ct = 6, K = 4;
  at::Tensor fs = at::randn({B, Cs, 8, 8}, f64), ft = at::randn({B, Ct, 5, 7}, f64);
  at::Tensor ws = at::randn({K, Cs}, f64), bs = at::randn({K}, f64), wt = at::randn({K, Ct}, f64),
             bt = at::randn({K}, f64);
  auto rad = op("mmh_ext::rad_forward")
                 .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                     const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                     const at::Tensor&, int64_t, at::IntArrayRef, double)>();
  std::vector<int64_t> levels{4, 2, 1};
  auto out = rad.call(fs, ft, ws, bs, wt, bt, 4, levels, 2.0);
  auto regions = [&](const at::Tensor& f, const at::Tensor& w, const at::Tensor& b) {
    at::Tensor grid = at::adaptive_avg_pool2d(f, {4, 4});
    std::vector<at::Tensor> cells;
    for (int64_t s : levels) cells.push_back(at::adaptive_avg_pool2d(grid, {s, s}).flatten(2).transpose(1, 2));
    return at::linear(at::cat(cells, 1), w, b) / 2.0;
  };
  at::Tensor ls = at::log_softmax(regions(fs, ws, bs), -1), lt = at::log_softmax(regions(ft, wt, bt), -1);
  at::Tensor want = 4.0 * (lt.exp() * (lt - ls)).sum(-1);
  expect(std::get<0>(out).sizes() == want.sizes() && at::allclose(std::get<0>(out), want), "rad_forward == reference");
  auto rad_bw = op("mmh_ext::rad_backward")
                    .typed<std::vector<at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::ScalarType,
                                                   at::ScalarType, int64_t, at::IntArrayRef, double, bool, bool)>();
  std::vector<int64_t> shw{8, 8}, thw{5, 7};
  auto grads = rad_bw.call(at::ones({B, 21}, f64), std::get<1>(out), std::get<2>(out), std::get<3>(out),
                           std::get<4>(out), ws, wt, shw, thw, at::kDouble, at::kDouble, 4, levels, 2.0, true, false);
  expect(grads.size() == 6 && grads[0].sizes() == fs.sizes() && grads[1].sizes() == ws.sizes() &&
             grads[3].numel() == 0 && at::isfinite(grads[0]).all().item<bool>(),
         "rad_backward shapes");

  // cosine discrepancy and dad
  at::Tensor h = at::randn({6, 3, 4}, f64), h2 = at::randn({6, 7}, f64);
  auto cosd =
      op("mmh_ext::cosine_discrepancy_forward").typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double)>();
  at::Tensor hn = h.flatten(1) / h.flatten(1).norm(2, 1, true);
  expect(at::allclose(std::get<0>(cosd.call(h, 1e-8)), 0.5 - 0.5 * at::mm(hn, hn.t())), "cosine_discrepancy");
  auto dad = op("mmh_ext::dad_forward")
                 .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                     const at::Tensor&, const at::Tensor&, c10::string_view, double)>();
  at::Tensor h2n = h2 / h2.norm(2, 1, true);
  at::Tensor want_dad = ((0.5 - 0.5 * at::mm(hn, hn.t())) - (0.5 - 0.5 * at::mm(h2n, h2n.t()))).square().sum().sqrt();
  expect(at::allclose(std::get<0>(dad.call(h, h2, "paper", 1e-8)), want_dad), "dad_forward (paper)");

  // bad input raises a c10::Error naming the argument
  bool raised = false;
  try {
    rad.call(fs, ft, ws, bs, wt, bt, 4, std::vector<int64_t>{8}, 2.0);
  } catch (const c10::Error& e) {
    raised = std::string(e.what()).find("levels") != std::string::npos;
  }
  expect(raised, "a level larger than the grid is rejected");

  std::printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}
