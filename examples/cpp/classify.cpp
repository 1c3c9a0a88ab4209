// Classify one sample with a student exported by `mmh export RUN_DIR --format torchscript --out student.pt`.
//
//   mmh_classify MODEL.pt SPEC.txt INPUT.raw [INPUT.raw ...] [--expect LOGITS.raw]
//
// SPEC.txt (written by examples/cpp/prepare.py from the export's sidecar student.pt.json) lists, in the network's
// input order, one block per input, then the class names:
//   input rgb 3 64 64          name and the item shape (C H W, or T C H W for clips)
//   mean 0.48 0.45 0.40        per-channel normalisation (absent: fed as is)
//   std 0.27 0.26 0.28
//   classes far near
// Each INPUT.raw holds the item's float32 values (native byte order, C-order), as mmh's readers give them
// (8-bit / 255, 16-bit / 65535); this program normalises them, runs the network and prints the logits, the
// probabilities and the predicted class. Needs LibTorch only: no Python, no mmh, no mmh_ext.
// --expect: compare the logits with reference values (float32 file) and fail above 1e-4 (the ctest check).
#include <torch/script.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct InputSpec {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> mean, std;
};

struct Spec {
  std::vector<InputSpec> inputs;
  std::vector<std::string> classes;
};

Spec read_spec(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open spec file " + path);
  Spec spec;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    std::istringstream words(line);
    std::string key;
    if (!(words >> key) || key[0] == '#') continue;
    if (key == "input") {
      InputSpec s;
      words >> s.name;
      int64_t d;
      while (words >> d) s.shape.push_back(d);
      if (s.name.empty() || s.shape.empty())
        throw std::runtime_error(path + ":" + std::to_string(lineno) + ": expected 'input NAME DIM...'");
      spec.inputs.push_back(s);
    } else if (key == "mean" || key == "std") {
      if (spec.inputs.empty()) throw std::runtime_error(path + ": '" + key + "' before any 'input' line");
      auto& v = key == "mean" ? spec.inputs.back().mean : spec.inputs.back().std;
      float x;
      while (words >> x) v.push_back(x);
    } else if (key == "classes") {
      std::string c;
      while (words >> c) spec.classes.push_back(c);
    } else {
      throw std::runtime_error(path + ":" + std::to_string(lineno) + ": unknown key '" + key + "'");
    }
  }
  if (spec.inputs.empty()) throw std::runtime_error(path + ": no 'input' line");
  return spec;
}

std::vector<float> read_floats(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open " + path);
  const auto bytes = static_cast<size_t>(in.tellg());
  if (bytes % sizeof(float)) throw std::runtime_error(path + ": size is not a multiple of 4 bytes (float32)");
  std::vector<float> v(bytes / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(bytes));
  return v;
}

torch::Tensor load_input(const InputSpec& s, const std::string& path) {
  std::vector<float> values = read_floats(path);
  int64_t numel = 1;
  for (auto d : s.shape) numel *= d;
  if (static_cast<int64_t>(values.size()) != numel)
    throw std::runtime_error(path + ": " + std::to_string(values.size()) + " values, input '" + s.name + "' needs " +
                             std::to_string(numel));
  torch::Tensor x = torch::from_blob(values.data(), {numel}, torch::kFloat32).clone().view(s.shape);
  if (!s.mean.empty()) {
    const int64_t c = s.shape[s.shape.size() - 3];  // channels: dim -3 of (C, H, W) and (T, C, H, W)
    if (static_cast<int64_t>(s.mean.size()) != c || s.std.size() != s.mean.size())
      throw std::runtime_error("input '" + s.name + "': mean/std need " + std::to_string(c) + " values");
    std::vector<float> sd(s.std);
    for (auto& v : sd) v = v < 1e-6f ? 1.0f : v;  // constant channels are not scaled (as mmh does)
    auto mean = torch::tensor(s.mean).view({c, 1, 1});
    auto std = torch::tensor(sd).view({c, 1, 1});
    x = (x - mean) / std;
  }
  return x.unsqueeze(0);  // a batch of one
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string expect;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--expect" && i + 1 < args.size()) {
      expect = args[i + 1];
      args.erase(args.begin() + static_cast<long>(i), args.begin() + static_cast<long>(i) + 2);
      break;
    }
  }
  if (args.size() < 3) {
    std::cerr << "usage: mmh_classify MODEL.pt SPEC.txt INPUT.raw [INPUT.raw ...] [--expect LOGITS.raw]\n";
    return 2;
  }
  try {
    const Spec spec = read_spec(args[1]);
    if (args.size() - 2 != spec.inputs.size()) {
      std::cerr << "the network takes " << spec.inputs.size() << " inputs, got " << args.size() - 2 << " files\n";
      return 2;
    }
    std::vector<torch::jit::IValue> inputs;
    for (size_t i = 0; i < spec.inputs.size(); ++i) inputs.emplace_back(load_input(spec.inputs[i], args[i + 2]));
    torch::jit::Module net = torch::jit::load(args[0]);
    net.eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor logits = net.forward(inputs).toTensor().squeeze(0).contiguous();
    const torch::Tensor probs = torch::softmax(logits, 0);
    const int64_t best = logits.argmax().item<int64_t>();
    const std::string name =
        best < static_cast<int64_t>(spec.classes.size()) ? spec.classes[best] : std::to_string(best);
    std::cout << "logits:";
    for (int64_t k = 0; k < logits.size(0); ++k) std::cout << ' ' << logits[k].item<float>();
    std::cout << "\nclass: " << name << " (index " << best << ", p = " << probs[best].item<float>() << ")\n";
    if (!expect.empty()) {
      const std::vector<float> want = read_floats(expect);
      if (static_cast<int64_t>(want.size()) != logits.size(0)) {
        std::cerr << expect << ": " << want.size() << " values, the network gives " << logits.size(0) << "\n";
        return 1;
      }
      float diff = 0;
      for (int64_t k = 0; k < logits.size(0); ++k) diff = std::max(diff, std::fabs(logits[k].item<float>() - want[k]));
      std::cout << "max |logit - expected| = " << diff << "\n";
      if (!(diff <= 1e-4f)) return 1;
    }
  } catch (const std::exception& e) {
    std::cerr << "mmh_classify: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
