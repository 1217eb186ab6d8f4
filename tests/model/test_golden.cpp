// The model reproduces the golden vectors of shared/testdata/golden (an independent float64 implementation
// of DAPE-SPEC): loss and every parameter gradient, in double and in single precision.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "gradcheck.h"
#include "model/gpt.h"

namespace dape {
namespace {

const std::string kGoldenDir = std::string(DAPE_SOURCE_DIR) + "/../shared/testdata/golden";

struct Tolerance {
  double loss, grad;
};

template <typename F>
void check_golden(const std::string& file, Tolerance tol) {
  const std::string path = kGoldenDir + "/" + file;
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no golden file " << path;
  checkpoint::H5Reader golden(path);
  const model::ModelConfig config = model::model_config_from_json(golden.attribute_string("model", "config"));
  model::GPT<F> gpt(config);
  for (const model::ParameterSpec& p : gpt.parameter_table()) {
    ASSERT_TRUE(golden.has("model/" + p.name)) << file << " lacks " << p.name;
    const std::vector<double> values = golden.read_double("model/" + p.name);
    ASSERT_EQ(values.size(), p.numel) << p.name;
    std::copy(values.begin(), values.end(), gpt.param(p.name));
  }
  ASSERT_EQ(golden.datasets("model").size(), gpt.parameter_table().size()) << "extra tensors in " << file;
  const std::vector<int64_t> tokens = golden.read_int("tokens");
  for (const char* group : {"T6", "T24"}) {
    const int T = static_cast<int>(golden.attribute_double(group, "length"));
    std::vector<int32_t> inputs(tokens.begin(), tokens.begin() + T),
        targets(tokens.begin() + 1, tokens.begin() + T + 1);
    gpt.zero_grad();
    const double loss = gpt.forward(inputs.data(), targets.data(), 1, T);
    gpt.backward(F(1));
    const double expected = golden.attribute_double(group, "loss");
    const double loss_err = std::abs(loss - expected) / std::abs(expected);
    EXPECT_LT(loss_err, tol.loss) << file << " " << group << " loss " << loss << " vs " << expected;
    std::vector<testing::GradCheckResult> errors;
    double model_max = 0;
    for (const model::ParameterSpec& p : gpt.parameter_table()) {
      const std::vector<double> ref = golden.read_double(std::string(group) + "/grad/" + p.name);
      const F* g = gpt.grad(p.name);
      testing::GradCheckResult e;
      for (size_t i = 0; i < p.numel; ++i) {
        e.max_abs_err = std::max(e.max_abs_err, std::abs(double(g[i]) - ref[i]));
        e.max_ref = std::max(e.max_ref, std::abs(ref[i]));
      }
      errors.push_back(e);
      model_max = std::max(model_max, e.max_ref);
    }
    double worst = 0;
    std::string worst_name;
    for (size_t t = 0; t < errors.size(); ++t) {
      const std::string& name = gpt.parameter_table()[t].name;
      const double rel = testing::relative_error(errors[t].max_abs_err, errors[t].max_ref, model_max);
      if (rel > worst) worst = rel, worst_name = name;
      EXPECT_LT(rel, tol.grad) << file << " " << group << " grad " << name;
    }
    std::printf("golden %-30s %-4s %-6s loss rel %.2e  worst grad rel %.2e (%s)\n", file.c_str(), group,
                sizeof(F) == 8 ? "double" : "float", loss_err, worst, worst_name.c_str());
  }
}

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, Double) {
  check_golden<double>(GetParam(), {1e-12, 1e-10});
}
TEST_P(Golden, Float) {
  check_golden<float>(GetParam(), {1e-5, 1e-4});
}

INSTANTIATE_TEST_SUITE_P(AllGoldenFiles, Golden,
                         ::testing::Values("nope.h5", "rope.h5", "alibi.h5", "kerple.h5", "fire.h5", "t5.h5",
                                           "dape-nope.h5", "dape-alibi.h5", "dape-kerple.h5", "dape-fire.h5",
                                           "dape-kerple-concat.h5", "dape-kerple-add_residual.h5"),
                         [](const auto& info) {
                           std::string name = info.param.substr(0, info.param.size() - 3);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace dape
