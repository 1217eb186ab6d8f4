// The schema table and config loading, in process.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "launcher/config.h"
#include "launcher/train.h"
#include "model/gpt.h"
#include "model/parameters.h"
#include "run_dape.h"

namespace dape::launcher::testing {
namespace {

std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no ConfigError";
}

TEST(ConfigSchema, HasExactlyTheDocumentedKeys) {
  const std::vector<std::string> expected = {"model.n_layers",
                                             "model.d_model",
                                             "model.n_heads",
                                             "model.vocab_size",
                                             "model.pe",
                                             "model.causal",
                                             "model.dape.variant",
                                             "model.dape.width",
                                             "model.dape.activation",
                                             "model.fire.width",
                                             "model.fire.L0",
                                             "model.norm",
                                             "model.mlp_activation",
                                             "model.scale_embedding",
                                             "model.attention_bias",
                                             "model.head_bias",
                                             "model.output_size",
                                             "model.dropout",
                                             "model.randomized_positions",
                                             "model.init",
                                             "train.seq_len",
                                             "train.micro_batch",
                                             "train.grad_accum",
                                             "train.steps",
                                             "train.lr",
                                             "train.min_lr",
                                             "train.warmup_steps",
                                             "train.weight_decay",
                                             "train.clip",
                                             "train.beta1",
                                             "train.beta2",
                                             "train.eps",
                                             "train.seed",
                                             "train.log_every",
                                             "train.kerple_project",
                                             "train.ckpt_every",
                                             "train.keep_last",
                                             "train.device",
                                             "parallel.dp",
                                             "parallel.timeout_s",
                                             "data.train",
                                             "data.val",
                                             "data.tokenizer",
                                             "che.task",
                                             "che.budget",
                                             "che.min_length",
                                             "che.max_length",
                                             "che.eval_lengths",
                                             "che.eval_samples",
                                             "che.eval_group",
                                             "che.eval_seed"};
  std::vector<std::string> names;
  for (const ConfigKey& k : config_schema()) {
    names.push_back(k.name);
    EXPECT_FALSE(k.doc.empty()) << k.name;
  }
  EXPECT_EQ(names, expected);
}

TEST(ConfigSchema, EveryKeyRoundTripsItsDefault) {
  RunConfig defaults;
  for (const ConfigKey& k : config_schema()) {
    RunConfig c;
    k.set(c, k.get(defaults));
    EXPECT_EQ(k.get(c), k.get(defaults)) << k.name;
  }
  EXPECT_EQ(find_key("model.pe")->choices.size(), 10u);
  EXPECT_EQ(find_key("train.kerple_project")->get(defaults), "false");
  EXPECT_EQ(find_key("train.ckpt_every")->get(defaults), "0");
  EXPECT_EQ(find_key("train.keep_last")->get(defaults), "3");
  EXPECT_EQ(find_key("train.device")->get(defaults), "cpu");
  EXPECT_EQ(find_key("train.device")->choices, (std::vector<std::string>{"cpu", "cuda", "auto"}));
}

TEST(ConfigSchema, SetValueParsesAndTypeChecks) {
  RunConfig c;
  set_value(c, "model.pe", "fire");
  set_value(c, "train.lr", "3e-4");
  set_value(c, "train.seed", "42");
  set_value(c, "model.causal", "false");
  set_value(c, "train.ckpt_every", "50");
  set_value(c, "train.keep_last", "0");
  apply_override(c, "model.dape.variant=add_residual");
  apply_override(c, "data.train=a=b.txt");  // only the first '=' splits
  EXPECT_EQ(c.model.pe, model::PositionalEncoding::fire);
  EXPECT_EQ(c.train.lr, 3e-4);
  EXPECT_EQ(c.train.seed, 42u);
  EXPECT_FALSE(c.model.causal);
  EXPECT_EQ(c.train.ckpt_every, 50);
  EXPECT_EQ(c.train.keep_last, 0);
  EXPECT_EQ(c.model.dape.variant, model::DapeVariant::add_residual);
  EXPECT_EQ(c.data.train, "a=b.txt");

  EXPECT_EQ(config_error([&] { set_value(c, "train.steps", "1e3"); }),
            "train.steps = 1e3: expected an integer");
  EXPECT_EQ(config_error([&] { set_value(c, "train.steps", "99999999999"); }),
            "train.steps = 99999999999: expected an integer that fits in 32 bits");
  EXPECT_EQ(config_error([&] { set_value(c, "train.clip", "nan"); }).rfind("train.clip = nan: expected a", 0),
            0u);
  EXPECT_EQ(config_error([&] { set_value(c, "train.kerple_project", "1"); }),
            "train.kerple_project = 1: expected true or false");
  set_value(c, "train.device", "auto");
  EXPECT_EQ(c.train.device, Device::automatic);
  EXPECT_EQ(config_error([&] { set_value(c, "train.device", "gpu"); }),
            "train.device = gpu: expected one of cpu, cuda, auto");
  EXPECT_NE(config_error([&] { set_value(c, "model.dape", "3"); }).find("a section, not a key"),
            std::string::npos);
  EXPECT_EQ(config_error([&] { apply_override(c, "=3"); }).rfind("--set =3: expected KEY=VALUE", 0), 0u);
}

TEST(ConfigSchema, ClosestKeySuggestions) {
  EXPECT_EQ(closest_key("model.n_layer"), "model.n_layers");
  EXPECT_EQ(closest_key("data.n_heads"), "model.n_heads");
  EXPECT_EQ(closest_key("model.dape.widht"), "model.dape.width");
  EXPECT_EQ(closest_key("train.kerple_projection"), "train.kerple_project");
}

class LoadConfigTest : public ScratchTest {};

TEST_F(LoadConfigTest, NestedAndDottedKeysAreEquivalentAndPathsResolve) {
  fs::create_directories(dir() / "configs");
  write_text(dir() / "train.txt", "hello");
  write_text(dir() / "configs" / "nested.yaml",
             "model:\n  d_model: 96\n  dape:\n    width: 8\ntrain:\n  lr: 2.0e-3\n"
             "data:\n  train: ../train.txt\n  val: ../train.txt\n");
  write_text(dir() / "configs" / "dotted.yaml",
             "model.d_model: 96\nmodel.dape.width: 8\ntrain.lr: 0.002\n"
             "data.train: ../train.txt\ndata.val: " +
                 (dir() / "train.txt").string() + "\n");
  RunConfig nested = load_config((dir() / "configs" / "nested.yaml").string(), {});
  RunConfig dotted = load_config((dir() / "configs" / "dotted.yaml").string(), {});
  EXPECT_EQ(to_yaml(nested), to_yaml(dotted));
  EXPECT_EQ(nested.model.d_model, 96);
  EXPECT_EQ(nested.model.dape.width, 8);
  EXPECT_EQ(nested.data.train, (dir() / "train.txt").string());

  // --set paths are relative to the current directory; later overrides win.
  RunConfig overridden = load_config((dir() / "configs" / "nested.yaml").string(),
                                     {"data.val=rel.txt", "model.d_model=128", "model.d_model=32"});
  EXPECT_EQ(overridden.data.val, (fs::current_path() / "rel.txt").string());
  EXPECT_EQ(overridden.model.d_model, 32);
  EXPECT_EQ(overridden.data.train, nested.data.train);

  // The resolved YAML loads back to the same config.
  write_text(dir() / "resolved.yaml", to_yaml(overridden));
  EXPECT_EQ(to_yaml(load_config((dir() / "resolved.yaml").string(), {})), to_yaml(overridden));
}

TEST_F(LoadConfigTest, ShippedConfigsAreValid) {
  for (const char* name : {"tiny", "125m", "350m"}) {
    RunConfig c = load_config(DAPE_SOURCE_DIR "/configs/" + std::string(name) + ".yaml", {});
    EXPECT_NO_THROW(validate(c)) << name;
  }
  RunConfig c125 = load_config(DAPE_SOURCE_DIR "/configs/125m.yaml", {});
  EXPECT_EQ(c125.model.n_layers, 12);
  EXPECT_EQ(c125.model.d_model, 768);
  EXPECT_EQ(c125.model.vocab_size, 50304);
  EXPECT_EQ(c125.train.lr, 6e-4);
  EXPECT_EQ(c125.train.steps, 50000);
  RunConfig c350 = load_config(DAPE_SOURCE_DIR "/configs/350m.yaml", {});
  EXPECT_EQ(c350.model.n_layers, 24);
  EXPECT_EQ(c350.model.n_heads, 16);
  EXPECT_EQ(c350.train.min_lr, 3e-5);
}

TEST_F(LoadConfigTest, ChooseRunDir) {
  fs::path given = dir() / "given";
  EXPECT_EQ(choose_run_dir(given.string(), "configs/tiny.yaml"), given.string());
  EXPECT_FALSE(fs::exists(given));
  fs::create_directories(given);
  write_text(given / "config.yaml", "");  // a crashed start leaves only config.yaml: reusable
  EXPECT_EQ(choose_run_dir(given.string(), "configs/tiny.yaml"), given.string());
  write_text(given / "metrics.jsonl", "");
  EXPECT_NE(
      config_error([&] { choose_run_dir(given.string(), "x.yaml"); }).find("already holds metrics.jsonl"),
      std::string::npos);
  fs::create_directories(given / "checkpoints");  // a run with checkpoints is resumed
  EXPECT_EQ(choose_run_dir(given.string(), "configs/tiny.yaml"), given.string());
  std::string def = choose_run_dir("", "some/where/125m.yaml");
  EXPECT_EQ(def.rfind("runs/125m-", 0), 0u) << def;
}

TEST(KerpleProjection, ClampsOnlyKerpleParameters) {
  EXPECT_TRUE(is_kerple_parameter("layers.0.pe.kerple.p"));
  EXPECT_TRUE(is_kerple_parameter("layers.11.pe.kerple.a_right"));
  EXPECT_FALSE(is_kerple_parameter("layers.0.pe.fire.c"));
  EXPECT_FALSE(is_kerple_parameter("layers.0.attn.qkv.weight"));

  model::ModelConfig config;
  config.pe = model::PositionalEncoding::kerple;
  config.causal = false;  // bidirectional: p, a, p_right, a_right
  model::GPT<float> gpt(config);
  gpt.init_parameters(1);
  int matched = 0;
  for (const model::ParameterSpec& spec : gpt.parameter_table()) {
    float* p = gpt.params() + spec.offset;
    std::fill(p, p + spec.numel, -1.0f);
    if (is_kerple_parameter(spec.name)) ++matched;
  }
  ASSERT_EQ(matched, 8) << "the model's Kerple tensor names changed";
  EXPECT_EQ(project_kerple(gpt), 8);
  for (const model::ParameterSpec& spec : gpt.parameter_table()) {
    const float expected = is_kerple_parameter(spec.name) ? float(kernels::kKerpleMin) : -1.0f;
    const float* p = gpt.params() + spec.offset;
    for (size_t i = 0; i < spec.numel; ++i) ASSERT_EQ(p[i], expected) << spec.name;
  }
}

TEST(LossPlot, DrawsPointsAndValidationLine) {
  std::vector<MetricsRecord> records;
  for (int s = 1; s <= 100; ++s) records.push_back({{"step", s}, {"loss", 5.0 - s * 0.03}});
  records.push_back({{"step", 100}, {"val_loss", 2.5}});
  std::string plot = plot_loss_curve(records, 40, 10);
  EXPECT_NE(plot.find("final val_loss 2.5000"), std::string::npos) << plot;
  EXPECT_GE(std::count(plot.begin(), plot.end(), '*'), 30) << plot;
  EXPECT_NE(plot.find("step 100"), std::string::npos) << plot;
  EXPECT_EQ(plot_loss_curve({}), "no loss records to plot\n");
}

}  // namespace
}  // namespace dape::launcher::testing
