// `dape eval` through the real binary: the JSON and the table, the --last semantics against GPT::evaluate,
// agreement with the float64 PyTorch oracle at 4x the training length, the plot, and its errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <regex>
#include <string>
#include <vector>

#include "data/loader.h"
#include "data/prepare.h"
#include "model_files.h"
#include "run_dape.h"

namespace dape::launcher::testing {
namespace {

using model::PositionalEncoding;
using EvalTest = ScratchTest;

std::string eval_args(const std::vector<fs::path>& models, const std::string& lengths,
                      const std::string& more) {
  std::string args = "eval";
  for (const fs::path& m : models) args += " --checkpoint " + quote(m.string());
  return args + " --data " + quote(kValText) + " --lengths " + lengths + " " + more;
}

// The mean over the first n windows of length L of the loss on the last K positions, from GPT::evaluate on
// windows cut from the raw tokens here (not through the data library).
double expected_loss(model::GPT<float>& gpt, const std::vector<int32_t>& tokens, int L, int K, int n) {
  const int scored = (K == 0 || L <= K) ? L : K;
  std::vector<float> losses(static_cast<size_t>(L));
  double sum = 0;
  for (int w = 0; w < n; ++w) {
    const int32_t* window = tokens.data() + size_t(w) * L;
    gpt.evaluate(window, window + 1, 1, L, losses.data());
    for (int t = L - scored; t < L; ++t) sum += losses[size_t(t)];
  }
  return sum / (double(n) * scored);
}

TEST_F(EvalTest, WritesJsonFieldsAndTheTable) {
  write_seeded_model(dir() / "kerple.h5", small_config(PositionalEncoding::kerple), 1);
  write_seeded_model(dir() / "dape.h5", small_config(PositionalEncoding::dape_kerple), 2);
  DapeRun run = dape(eval_args({dir() / "kerple.h5", dir() / "dape.h5"}, "16,64",
                               "--batches 3 --last 32 --json out/e.json"));
  ASSERT_EQ(run.exit_code, 0) << run.err;

  const nlohmann::json j = read_json(cwd() / "out" / "e.json");
  ASSERT_EQ(j["results"].size(), 4u) << j.dump();
  EXPECT_EQ(j["last"], 32);
  const std::vector<std::string> pes = {"kerple", "kerple", "dape-kerple", "dape-kerple"};
  const std::vector<int> lengths = {16, 64, 16, 64};
  for (size_t i = 0; i < 4; ++i) {
    const nlohmann::json& r = j["results"][i];
    for (const char* field : {"checkpoint", "pe", "length", "loss", "ppl", "tokens"})
      EXPECT_TRUE(r.contains(field)) << field << " missing in " << r.dump();
    EXPECT_EQ(r["pe"], pes[i]);
    EXPECT_EQ(r["length"], lengths[i]);
    EXPECT_EQ(r["checkpoint"], (dir() / (i < 2 ? "kerple.h5" : "dape.h5")).string());
    EXPECT_EQ(r["tokens"], 3 * std::min(lengths[i], 32));  // 3 windows, last 32 (all 16 of L = 16)
    EXPECT_NEAR(r["ppl"].get<double>(), std::exp(r["loss"].get<double>()), 1e-9);
    EXPECT_GT(r["loss"].get<double>(), 4.0);  // an untrained byte model: about ln 256 = 5.5
  }

  // The table: a header of lengths and one row per model, labelled "pe (path)", with the JSON's ppl.
  EXPECT_NE(run.out.find("| model | 16 | 64 |"), std::string::npos) << run.out;
  for (size_t m = 0; m < 2; ++m) {
    char row[512];
    std::snprintf(row, sizeof row, "| %s (%s) | %.3f | %.3f |", pes[2 * m].c_str(),
                  j["results"][2 * m]["checkpoint"].get<std::string>().c_str(),
                  j["results"][2 * m]["ppl"].get<double>(), j["results"][2 * m + 1]["ppl"].get<double>());
    EXPECT_NE(run.out.find(row), std::string::npos) << row << "\nnot in\n" << run.out;
  }
}

TEST_F(EvalTest, LastScoresTheLastKPositionsAsGptEvaluate) {
  auto gpt = write_seeded_model(dir() / "m.h5", small_config(PositionalEncoding::dape_alibi), 3);
  const std::vector<int32_t> tokens = val_tokens();
  struct Case {
    int last;
    std::vector<int> lengths;
  };
  // K inside the window, K = 0 (all), and K longer than every window (all).
  for (const Case& c : {Case{30, {40, 100}}, Case{0, {40, 100}}, Case{200, {40, 100}}}) {
    SCOPED_TRACE("--last " + std::to_string(c.last));
    DapeRun run = dape(eval_args({dir() / "m.h5"}, "40,100",
                                 "--batches 3 --last " + std::to_string(c.last) + " --json e.json"));
    ASSERT_EQ(run.exit_code, 0) << run.err;
    const nlohmann::json j = read_json(cwd() / "e.json");
    for (size_t i = 0; i < c.lengths.size(); ++i) {
      const int L = c.lengths[i];
      const int scored = (c.last == 0 || L <= c.last) ? L : c.last;
      EXPECT_EQ(j["results"][i]["tokens"], 3 * scored);
      EXPECT_NEAR(j["results"][i]["loss"].get<double>(), expected_loss(*gpt, tokens, L, c.last, 3), 2e-6)
          << "L = " << L;
    }
  }
  // The scored positions matter: the last 30 of 100 differ from all 100.
  const double last30 = expected_loss(*gpt, tokens, 100, 30, 3), all = expected_loss(*gpt, tokens, 100, 0, 3);
  EXPECT_GT(std::abs(last30 - all), 1e-4);
}

TEST_F(EvalTest, AgreesWithThePyTorchOracleAtFourTimesTheTrainingLength) {
  // A model "trained" at 32 (seeded weights) evaluated at 128 = 4 x 32, scoring the last 32 positions.
  for (PositionalEncoding pe : {PositionalEncoding::dape_kerple, PositionalEncoding::fire}) {
    const std::string name = model::to_string(pe);
    SCOPED_TRACE(name);
    write_seeded_model(dir() / (name + ".h5"), small_config(pe), 11);
    DapeRun run = dape(eval_args({dir() / (name + ".h5")}, "128", "--batches 2 --last 32 --json e.json"));
    ASSERT_EQ(run.exit_code, 0) << run.err;
    const double ours = read_json(cwd() / "e.json")["results"][0]["loss"].get<double>();
    const CommandRun oracle =
        run_command(kPython + " " + quote(kTestsDir + "/torch_eval.py") + " oracle " +
                    quote((dir() / (name + ".h5")).string()) + " " + quote(kValText) + " 128 32 2");
    ASSERT_EQ(oracle.exit_code, 0) << oracle.out;
    const double theirs = std::stod(oracle.out);
    std::printf("%s: dape eval %.9f, oracle %.9f, diff %.2e\n", name.c_str(), ours, theirs,
                std::abs(ours - theirs));
    EXPECT_NEAR(ours, theirs, 1e-4);
  }
}

TEST_F(EvalTest, ReadsTheValSplitOfAPreparedDirectory) {
  // 40 documents of the validation text, about half of them in val, byte tokens.
  const std::string text = read_text(kValText);
  fs::create_directories(dir() / "docs");
  for (int d = 0; d < 40; ++d)
    write_text(dir() / "docs" / ("doc" + std::to_string(100 + d) + ".txt"),
               text.substr(size_t(d) * 600, 600));
  data::PrepareOptions options;
  options.inputs = {(dir() / "docs").string()};
  options.out_dir = (dir() / "prepared").string();
  options.tokenizer = "byte";
  options.val_fraction = 0.5;
  options.threads = 1;
  data::prepare(options);
  auto gpt = write_seeded_model(dir() / "m.h5", small_config(PositionalEncoding::kerple), 7);

  for (const std::string& split : {std::string("val"), std::string("train")}) {
    SCOPED_TRACE(split);
    const fs::path data_path = split == "val" ? dir() / "prepared" : dir() / "prepared" / "train";
    DapeRun run = dape("eval --checkpoint " + quote((dir() / "m.h5").string()) + " --data " +
                       quote(data_path.string()) + " --lengths 100 --batches 4 --last 50 --json e.json");
    ASSERT_EQ(run.exit_code, 0) << run.err;
    const nlohmann::json j = read_json(cwd() / "e.json");
    // The same windows read straight from the split's token stream.
    const data::ShardWindows stream((dir() / "prepared").string(),
                                    split == "val" ? data::Split::val : data::Split::train, 1);
    std::vector<int32_t> tokens(4 * 100 + 1);
    stream.read_tokens(0, int64_t(tokens.size()), tokens.data());
    EXPECT_NEAR(j["results"][0]["loss"].get<double>(), expected_loss(*gpt, tokens, 100, 50, 4), 2e-6);
    EXPECT_EQ(j["tokenizer"], "byte");
  }
  // A prepared directory names its tokenizer; asking for another one is a usage error.
  DapeRun run = dape("eval --checkpoint " + quote((dir() / "m.h5").string()) + " --data " +
                     quote((dir() / "prepared").string()) + " --tokenizer gpt2 --lengths 100 --json e.json");
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_NE(run.err.find("prepared with tokenizer 'byte'"), std::string::npos) << run.err;
}

TEST_F(EvalTest, PlotsOrSaysWhyNot) {
  write_seeded_model(dir() / "m.h5", small_config(PositionalEncoding::kerple), 4);
  const std::string args = eval_args({dir() / "m.h5"}, "16,32", "--batches 1 --json e.json --plot e.png");
  if (python_has("matplotlib")) {
    DapeRun run = dape(args);
    ASSERT_EQ(run.exit_code, 0) << run.err;
    EXPECT_TRUE(is_png(cwd() / "e.png"));
    fs::remove(cwd() / "e.png");
  }
  ScopedEnv no_matplotlib("PYTHONPATH", make_matplotlib_stub(dir() / "stub").string());
  DapeRun run = dape(args);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(fs::exists(cwd() / "e.json"));
  EXPECT_FALSE(fs::exists(cwd() / "e.png"));
  EXPECT_NE(run.err.find("skipped"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("python3-matplotlib"), std::string::npos) << run.err;
}

TEST_F(EvalTest, LengthWithoutAWindowIsAClearError) {
  write_seeded_model(dir() / "m.h5", small_config(PositionalEncoding::kerple), 5);
  const size_t n = val_tokens().size();
  DapeRun run = dape(eval_args({dir() / "m.h5"}, "32,100000", "--json e.json"));
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_NE(run.err.find("length 100000"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find(std::to_string(n) + " tokens"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("drop 100000 from --lengths"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(cwd() / "e.json"));
}

TEST_F(EvalTest, DamagedOrMissingModelFailsWithoutACrash) {
  write_seeded_model(dir() / "m.h5", small_config(PositionalEncoding::kerple), 6);
  fs::resize_file(dir() / "m.h5", fs::file_size(dir() / "m.h5") / 2);
  DapeRun run = dape(eval_args({dir() / "m.h5"}, "32", "--json e.json"));
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("dape: error:"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find((dir() / "m.h5").string()), std::string::npos) << run.err;

  run = dape(eval_args({dir() / "absent.h5"}, "32", "--json e.json"));
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_NE(run.err.find("absent.h5' does not exist"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(cwd() / "e.json"));
}

}  // namespace
}  // namespace dape::launcher::testing
