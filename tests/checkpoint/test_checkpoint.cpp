// Weight files (atomic write, round trip, errors), the generic reader on the golden files, and an
// independent read-back with h5py.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "error_message.h"
#include "checkpoint/checkpoint.h"
#include "kernels/error.h"

namespace dape::checkpoint {
namespace {

using testing::error_message;

namespace fs = std::filesystem;

const std::string kConfig =
    R"({"model": {"n_layers": 1, "d_model": 4, "n_heads": 2, "vocab_size": 3, "pe": "dape-kerple", )"
    R"("causal": true, "dape": {"variant": "concat_residual", "width": 32, "activation": "leaky_relu"}, )"
    R"("fire": {"width": 32, "L0": 64}}, "note": "G\u00f6ran \u2026"})";

// A fresh directory per test, removed afterwards.
class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("dape_test_checkpoint_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

comm::ShardDescriptor unsharded(const std::string& name, std::vector<int64_t> shape) {
  return comm::ShardDescriptor{name, shape, std::vector<int64_t>(shape.size(), 0), shape, 0};
}

std::string golden(const std::string& name) {
  return std::string(DAPE_SOURCE_DIR) + "/../shared/testdata/golden/" + name;
}

// Writes a small weight file: a [3,4] matrix, a [2] vector and a scalar.
struct SmallModel {
  std::vector<float> embed{0.5f, -1.25f, 3.0f, 1e-7f, 0, 1, 2, 3, 4, 5, 6, 7.75f};
  std::vector<float> p{0.25f, -8.5f};
  float lambda = 2.5f;
  std::vector<TensorToWrite> tensors() const {
    return {{unsharded("embed.weight", {3, 4}), embed.data()},
            {unsharded("layers.0.pe.kerple.p", {2}), p.data()},
            {unsharded("layers.0.pe.fire.lambda", {}), &lambda}};
  }
};

TEST_F(CheckpointTest, WeightFileRoundTrip) {
  const SmallModel model;
  const std::string file = path("model.h5");
  write_weight_file(file, model.tensors(), kConfig);
  EXPECT_FALSE(fs::exists(file + ".tmp"));

  const H5Reader reader(file);
  EXPECT_EQ(reader.datasets("/"),
            (std::vector<std::string>{"embed.weight", "layers.0.pe.fire.lambda", "layers.0.pe.kerple.p"}));
  EXPECT_EQ(reader.shape("embed.weight"), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(reader.shape("layers.0.pe.kerple.p"), (std::vector<int64_t>{2}));
  EXPECT_EQ(reader.shape("layers.0.pe.fire.lambda"), std::vector<int64_t>{});
  EXPECT_EQ(reader.read_float("embed.weight"), model.embed);
  EXPECT_EQ(reader.read_float("layers.0.pe.kerple.p"), model.p);
  EXPECT_EQ(reader.read_double("layers.0.pe.fire.lambda"), std::vector<double>{2.5});
  EXPECT_EQ(reader.attribute_string("/", "config"), kConfig);
  EXPECT_TRUE(reader.has("embed.weight"));
  EXPECT_TRUE(reader.has("/embed.weight"));
  EXPECT_FALSE(reader.has("head.weight"));
  EXPECT_FALSE(reader.has("no/such/group"));
}

TEST_F(CheckpointTest, OverwritesAnExistingFileAndStaleTemporary) {
  const std::string file = path("model.h5");
  const SmallModel model;
  write_weight_file(file, model.tensors(), "{}");
  std::ofstream(file + ".tmp") << "left over from a crash";
  SmallModel changed;
  changed.lambda = -1;
  write_weight_file(file, changed.tensors(), kConfig);
  EXPECT_FALSE(fs::exists(file + ".tmp"));
  EXPECT_EQ(H5Reader(file).read_float("layers.0.pe.fire.lambda"), std::vector<float>{-1});
}

TEST_F(CheckpointTest, FailedWriteLeavesExistingFileAndNoTemporary) {
  const std::string file = path("model.h5");
  const SmallModel model;
  write_weight_file(file, model.tensors(), kConfig);
  const auto before = fs::file_size(file);

  std::vector<TensorToWrite> null_data = model.tensors();
  null_data.push_back({unsharded("head.weight", {3, 4}), nullptr});
  std::string message = error_message([&] { write_weight_file(file, null_data, kConfig); });
  EXPECT_NE(message.find(file), std::string::npos) << message;
  EXPECT_NE(message.find("head.weight"), std::string::npos) << message;

  std::vector<TensorToWrite> sharded = model.tensors();
  sharded[0].desc.local_shape = {3, 2};
  sharded[0].desc.offset = {0, 2};
  message = error_message([&] { write_weight_file(file, sharded, kConfig); });
  EXPECT_NE(message.find("embed.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("sharded"), std::string::npos) << message;

  std::vector<TensorToWrite> twice = model.tensors();
  twice.push_back(twice[1]);
  EXPECT_THROW(write_weight_file(file, twice, kConfig), Error);

  std::vector<TensorToWrite> negative = model.tensors();
  negative[1].desc = unsharded("layers.0.pe.kerple.p", {-2});
  EXPECT_THROW(write_weight_file(file, negative, kConfig), Error);

  EXPECT_FALSE(fs::exists(file + ".tmp"));
  EXPECT_EQ(fs::file_size(file), before);
  EXPECT_EQ(H5Reader(file).read_float("layers.0.pe.kerple.p"), model.p);
}

TEST_F(CheckpointTest, UnwritableDirectoryNamesThePath) {
  const std::string file = path("missing_dir/model.h5");
  const SmallModel model;
  const std::string message = error_message([&] { write_weight_file(file, model.tensors(), kConfig); });
  EXPECT_NE(message.find(file), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(file + ".tmp"));
}

TEST_F(CheckpointTest, TruncatedFileNamesTheFile) {
  const std::string file = path("truncated.h5");
  std::vector<float> big(4096, 1.5f);
  write_weight_file(file, {{unsharded("embed.weight", {64, 64}), big.data()}}, kConfig);
  fs::resize_file(file, fs::file_size(file) / 2);
  const std::string message = error_message([&] { H5Reader reader(file); });
  EXPECT_NE(message.find("checkpoint: cannot open '" + file + "': not an HDF5 file or truncated"),
            std::string::npos)
      << message;
}

TEST_F(CheckpointTest, NotHdf5AndMissingFileNameTheFile) {
  const std::string text = path("notes.txt");
  std::ofstream(text) << "plain text, not HDF5";
  EXPECT_NE(error_message([&] { H5Reader reader(text); }).find(text), std::string::npos);
  const std::string missing = path("missing.h5");
  const std::string message = error_message([&] { H5Reader reader(missing); });
  EXPECT_NE(message.find(missing), std::string::npos) << message;
  EXPECT_NE(message.find("no such file"), std::string::npos) << message;
}

TEST_F(CheckpointTest, MissingObjectsAreNamed) {
  const std::string file = path("model.h5");
  const SmallModel model;
  write_weight_file(file, model.tensors(), kConfig);
  const H5Reader reader(file);
  EXPECT_EQ(error_message([&] { reader.read_float("layers.0.ln1.weight"); }),
            "checkpoint '" + file + "' has no dataset 'layers.0.ln1.weight'");
  EXPECT_EQ(error_message([&] { reader.shape("T6/grad/embed.weight"); }),
            "checkpoint '" + file + "' has no dataset 'T6/grad/embed.weight'");
  std::string message = error_message([&] { reader.attribute_string("/", "step"); });
  EXPECT_NE(message.find("'step'"), std::string::npos) << message;
  EXPECT_NE(message.find(file), std::string::npos) << message;
  message = error_message([&] { reader.attribute_double("/", "config"); });
  EXPECT_NE(message.find("not a number"), std::string::npos) << message;
  EXPECT_THROW(reader.datasets("model"), Error);
}

TEST_F(CheckpointTest, WriterGroupsTypesAndAttributes) {
  const std::string file = path("oracle.h5");
  const std::vector<double> grad{1.0 / 3, -2e-300, 7};
  const std::vector<int64_t> tokens{50, 22, 0, int64_t{1} << 40};
  const float scalar = 0.125f;
  {
    H5Writer writer(file);
    writer.write("T6/grad/layers.0.ln1.bias", {3}, grad.data());
    writer.write("tokens", {2, 2}, tokens.data());
    writer.write("model/layers.0.pe.fire.c", {}, &scalar);
    writer.set_attribute("model", "config", kConfig);
    writer.set_attribute("T6", "loss", 4.25);
    writer.set_attribute("T6", "loss", 4.5);   // replaces
    writer.set_attribute("T24", "loss", 1.0);  // creates the group
    writer.set_attribute("/", "title", "G\xc3\xb6ran \xe2\x80\xa6");
    EXPECT_THROW(writer.write("tokens", {1}, tokens.data()), Error);
    writer.close();
    EXPECT_THROW(writer.write("more", {1}, tokens.data()), Error);
  }
  const H5Reader reader(file);
  EXPECT_EQ(reader.read_double("T6/grad/layers.0.ln1.bias"), grad);
  EXPECT_EQ(reader.read_int("tokens"), tokens);
  EXPECT_EQ(reader.shape("tokens"), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(reader.read_double("tokens")[1], 22.0);
  EXPECT_EQ(reader.read_float("model/layers.0.pe.fire.c"), std::vector<float>{0.125f});
  EXPECT_EQ(reader.attribute_string("model", "config"), kConfig);
  EXPECT_EQ(reader.attribute_double("T6", "loss"), 4.5);
  EXPECT_EQ(reader.attribute_double("T24", "loss"), 1.0);
  EXPECT_EQ(reader.attribute_string("/", "title"), "G\xc3\xb6ran \xe2\x80\xa6");
  EXPECT_EQ(reader.datasets("/"), std::vector<std::string>{"tokens"});
  EXPECT_EQ(reader.datasets("T6/grad"), std::vector<std::string>{"layers.0.ln1.bias"});
  EXPECT_TRUE(reader.has("T6/grad"));
}

TEST(GoldenFile, KerpleShapesValuesAndAttributes) {
  const std::string file = golden("kerple.h5");
  if (!fs::exists(file)) GTEST_SKIP() << "golden file not found: " << file;
  const H5Reader reader(file);
  const std::vector<std::string> names = reader.datasets("model");
  EXPECT_EQ(names.size(), 32u);
  EXPECT_EQ(reader.datasets("/"), std::vector<std::string>{"tokens"});
  EXPECT_EQ(reader.shape("model/embed.weight"), (std::vector<int64_t>{64, 16}));
  EXPECT_EQ(reader.shape("model/layers.0.attn.qkv.weight"), (std::vector<int64_t>{48, 16}));
  EXPECT_EQ(reader.shape("model/layers.1.mlp.proj.weight"), (std::vector<int64_t>{16, 64}));
  EXPECT_EQ(reader.shape("model/layers.0.pe.kerple.p"), (std::vector<int64_t>{4}));
  EXPECT_EQ(reader.shape("T24/grad/head.weight"), (std::vector<int64_t>{64, 16}));
  const std::vector<double> embed = reader.read_double("model/embed.weight");
  ASSERT_EQ(embed.size(), 64u * 16u);
  EXPECT_EQ(embed[1], -0.6398920619875567);
  EXPECT_EQ(embed[16], -0.012465997291614048);
  EXPECT_EQ(reader.read_float("model/layers.0.pe.kerple.p")[0], 0.004f);
  const std::vector<int64_t> tokens = reader.read_int("tokens");
  ASSERT_EQ(tokens.size(), 25u);
  EXPECT_EQ(std::vector<int64_t>(tokens.begin(), tokens.begin() + 4), (std::vector<int64_t>{50, 22, 0, 62}));
  const std::string config = reader.attribute_string("model", "config");
  EXPECT_EQ(config.front(), '{');
  EXPECT_NE(config.find(R"("pe": "kerple")"), std::string::npos) << config;
  EXPECT_NE(config.find(R"("n_layers": 2)"), std::string::npos) << config;
  EXPECT_EQ(reader.attribute_double("T6", "loss"), 4.239447763767082);
  EXPECT_EQ(reader.attribute_double("T24", "length"), 24.0);
}

// Reads a weight file back with h5py, an implementation independent of ours.
TEST_F(CheckpointTest, H5pyReadsTheWeightFile) {
  if (std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 with h5py is not available";
  }
  const std::string file = path("model.h5");
  const SmallModel model;
  write_weight_file(file, model.tensors(), kConfig);
  const std::string script = path("check.py");
  std::ofstream(script) << "import json, sys, h5py\n"
                           "f = h5py.File(sys.argv[1], 'r')\n"
                           "w = f['embed.weight']\n"
                           "assert w.dtype == 'float32' and w.shape == (3, 4), (w.dtype, w.shape)\n"
                           "assert w[0, 1] == -1.25 and w[2, 3] == 7.75\n"
                           "assert f['layers.0.pe.fire.lambda'].shape == ()\n"
                           "assert f['layers.0.pe.fire.lambda'][()] == 2.5\n"
                           "config = f.attrs['config']\n"
                           "assert isinstance(config, str), type(config)\n"
                           "c = json.loads(config)\n"
                           "assert c['model']['pe'] == 'dape-kerple' and c['model']['dape']['width'] == 32\n"
                           "assert c['note'] == 'G\\u00f6ran \\u2026', c['note']\n";
  const std::string command = "/usr/bin/python3 '" + script + "' '" + file + "'";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

// Files written by h5py: fixed-length strings, other numeric types, nested groups.
TEST_F(CheckpointTest, ReadsFilesWrittenByH5py) {
  if (std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 with h5py is not available";
  }
  const std::string file = path("from_h5py.h5");
  const std::string command =
      "/usr/bin/python3 -c \"import sys, h5py, numpy as np\n"
      "f = h5py.File(sys.argv[1], 'w')\n"
      "f['x'] = np.arange(6, dtype=np.int32).reshape(2, 3)\n"
      "f['g/y'] = np.float64(-0.5)\n"
      "f.attrs['fixed'] = np.bytes_(b'abc')\n"
      "f.attrs['text'] = 'G\\u00f6ran'\n"
      "f['g'].attrs['n'] = np.int32(7)\n\" '" +
      file + "'";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const H5Reader reader(file);
  EXPECT_EQ(reader.shape("x"), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(reader.read_int("x"), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(reader.read_float("x")[5], 5.0f);
  EXPECT_EQ(reader.shape("g/y"), std::vector<int64_t>{});
  EXPECT_EQ(reader.read_double("g/y"), std::vector<double>{-0.5});
  EXPECT_EQ(reader.attribute_string("/", "fixed"), "abc");
  EXPECT_EQ(reader.attribute_string("/", "text"), "G\xc3\xb6ran");
  EXPECT_EQ(reader.attribute_double("g", "n"), 7.0);
  EXPECT_EQ(reader.datasets("/"), std::vector<std::string>{"x"});
  EXPECT_EQ(reader.datasets("g"), std::vector<std::string>{"y"});
}

}  // namespace
}  // namespace dape::checkpoint
