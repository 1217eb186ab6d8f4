// `dape inspect` through the real binary: a good weight file, damaged and mismatched ones (exit codes and
// messages), and a run directory with its checkpoints (step, tokens, checksums, the fallback to model.h5).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "model_files.h"
#include "run_dape.h"

namespace dape::launcher::testing {
namespace {

using model::PositionalEncoding;
using InspectTest = ScratchTest;

TEST_F(InspectTest, GoodWeightFile) {
  auto gpt = write_seeded_model(dir() / "m.h5", small_config(PositionalEncoding::dape_fire), 1);
  DapeRun run = dape("inspect " + quote((dir() / "m.h5").string()));
  ASSERT_EQ(run.exit_code, 0) << run.err << run.out;
  EXPECT_NE(run.out.find("(weight file)"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("\"pe\":\"dape-fire\""), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("valid: yes"), std::string::npos) << run.out;
  std::string count = std::to_string(gpt->num_parameters());
  for (int i = int(count.size()) - 3; i > 0; i -= 3) count.insert(size_t(i), ",");
  EXPECT_NE(run.out.find("parameters: " + count + " (config)"), std::string::npos) << run.out;
  // One table row per tensor with its shape; the statistics of one tensor checked here.
  for (const model::ParameterSpec& spec : gpt->parameter_table())
    EXPECT_NE(run.out.find("| " + spec.name + " | "), std::string::npos) << spec.name;
  const float* w = gpt->param("layers.1.pe.fire.fc2.weight");
  double sum = 0, sq = 0;
  for (int i = 0; i < 4 * 16; ++i) sum += w[i], sq += double(w[i]) * w[i];
  char row[256];
  std::snprintf(row, sizeof row, "| layers.1.pe.fire.fc2.weight | [4, 16] | %.4g | ", sum / 64);
  EXPECT_NE(run.out.find(row), std::string::npos) << row << "\n" << run.out;
  std::snprintf(row, sizeof row, " | %.4g |\n", std::sqrt(sq));
  EXPECT_NE(run.out.find(row), std::string::npos) << row;
}

// A weight file of `gpt`'s tensors, edited by `edit` before it is written.
void write_edited(const fs::path& path, model::GPT<float>& gpt, const std::string& config_json,
                  const std::function<void(std::vector<checkpoint::TensorToWrite>&)>& edit) {
  std::vector<checkpoint::TensorToWrite> tensors = tensors_of(gpt);
  edit(tensors);
  checkpoint::write_weight_file(path.string(), tensors, config_json);
}

TEST_F(InspectTest, DamagedAndMismatchedFiles) {
  const model::ModelConfig config = small_config(PositionalEncoding::dape_kerple);
  auto gpt = write_seeded_model(dir() / "good.h5", config, 2);
  const std::string json = model::to_json(config);
  auto erase = [](std::vector<checkpoint::TensorToWrite>& t, const std::string& name) {
    std::erase_if(t, [&](const auto& x) { return x.desc.name == name; });
  };
  write_edited(dir() / "missing.h5", *gpt, json, [&](auto& t) { erase(t, "head.weight"); });
  model::ModelConfig kerple = config;
  kerple.pe = PositionalEncoding::kerple;  // the config of another model than the tensors
  write_edited(dir() / "mismatch.h5", *gpt, model::to_json(kerple), [](auto&) {});
  model::ModelConfig wide = config;
  wide.d_model = 48;
  write_edited(dir() / "shape.h5", *gpt, model::to_json(wide), [](auto&) {});
  std::vector<float> nan_embed(gpt->param("embed.weight"), gpt->param("embed.weight") + 256 * 32);
  nan_embed[7] = std::numeric_limits<float>::quiet_NaN();
  write_edited(dir() / "nan.h5", *gpt, json, [&](auto& t) {
    for (auto& x : t)
      if (x.desc.name == "embed.weight") x.data = nan_embed.data();
  });
  fs::copy_file(dir() / "good.h5", dir() / "truncated.h5");
  fs::resize_file(dir() / "truncated.h5", fs::file_size(dir() / "good.h5") / 3);
  write_text(dir() / "text.h5", "not an HDF5 file\n");

  struct Case {
    std::string file, message;
  };
  for (const Case& c :
       {Case{"missing.h5", "lacks tensor 'head.weight' [256, 32]"},
        Case{"mismatch.h5", "tensor 'layers.0.dape.fc1.weight' is not a parameter of its config (pe kerple)"},
        Case{"shape.h5",
             "tensor 'embed.weight' has shape [256, 32], its config (pe dape-kerple, d_model 48) needs [256, "
             "48]"},
        Case{"nan.h5", "tensor 'embed.weight' holds 1 of 8192 values that are NaN or infinite"},
        Case{"truncated.h5", "truncated"}, Case{"text.h5", "not an HDF5 file"}}) {
    SCOPED_TRACE(c.file);
    const std::string path = (dir() / c.file).string();
    DapeRun run = dape("inspect " + quote(path));
    EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
    EXPECT_NE(run.out.find("valid: no"), std::string::npos) << run.out;
    EXPECT_NE(run.out.find(c.message), std::string::npos) << run.out;
    EXPECT_NE(run.err.find("dape: error: " + path + " is not a valid model: "), std::string::npos) << run.err;
    // eval refuses the same file with the same reason, on one line.
    DapeRun e = dape("eval --checkpoint " + quote(path) + " --data " + quote(kValText) +
                     " --lengths 32 --json e.json");
    EXPECT_EQ(e.exit_code, 1) << e.err;
    EXPECT_NE(e.err.find(c.message), std::string::npos) << e.err;
    EXPECT_EQ(std::count(e.err.begin(), e.err.end(), '\n'), 1) << e.err;
  }
  DapeRun run = dape("inspect " + quote((dir() / "nothing.h5").string()));
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_NE(run.err.find("does not exist"), std::string::npos) << run.err;
  run = dape("inspect " + quote(dir().string()));  // a folder without a model
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.out.find("holds no model"), std::string::npos) << run.out;
}

TEST_F(InspectTest, RunDirectoryAndCheckpoints) {
  ASSERT_EQ(train(kTinyConfig, cwd() / "run", {"train.steps=20", "train.seq_len=16", "train.log_every=10"})
                .exit_code,
            0);
  const fs::path step = cwd() / "run" / "checkpoints" / "step_00000020";
  ASSERT_TRUE(fs::exists(step / "state.h5"));

  DapeRun run = dape("inspect run");
  ASSERT_EQ(run.exit_code, 0) << run.err << run.out;
  EXPECT_NE(run.out.find("(run directory)"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("step_00000020/state.h5 (group model/)"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("step: 20\n"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("tokens seen: 2,560\n"), std::string::npos) << run.out;  // 20 x 8 x 16
  EXPECT_NE(run.out.find("checksums: verified"), std::string::npos) << run.out;

  // The checkpoint, its final model.h5 and the run directory evaluate to the same loss.
  run = dape("eval --checkpoint run --checkpoint run/model.h5 --checkpoint " + quote(step.string()) +
             " --data " + quote(kValText) + " --lengths 64 --batches 2 --json e.json");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const nlohmann::json j = read_json(cwd() / "e.json");
  EXPECT_EQ(j["results"][0]["loss"], j["results"][1]["loss"]);
  EXPECT_EQ(j["results"][0]["loss"], j["results"][2]["loss"]);

  // export reads the checkpoint's group model/ too.
  if (python_has("torch")) {
    run = dape("export --checkpoint run --out exported/model.pt");
    EXPECT_EQ(run.exit_code, 0) << run.err;
    EXPECT_NE(run.out.find("wrote exported/model.pt: dape-kerple, 40 tensors"), std::string::npos) << run.out;
  }

  // Damage the checkpoint: its checksums fail; the run directory falls back to model.h5 and says so.
  {
    std::fstream f(step / "state.h5", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(step / "state.h5") / 2));
    f.write("damaged!", 8);
  }
  run = dape("inspect " + quote(step.string()));
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_NE(run.out.find("checksums: not verified"), std::string::npos) << run.out;
  EXPECT_NE(run.err.find("SHA-256"), std::string::npos) << run.err;
  run = dape("inspect run");
  EXPECT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("file: run/model.h5"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("skipped damaged checkpoint step_00000020"), std::string::npos) << run.out;
}

}  // namespace
}  // namespace dape::launcher::testing
