// `dape tokenize`: ids of a file on one line, --decode back to the same bytes, and one clear error line with
// a non-zero exit code for bad input (launcher/commands.h, docs/tokenizer.md).
#include <gtest/gtest.h>

#include <string>

#include "run_dape.h"

namespace dape::launcher::testing {
namespace {

using TokenizeCli = ScratchTest;

TEST_F(TokenizeCli, EncodesAndDecodesExactly) {
  write_text(cwd() / "hello.txt", "Hello world");
  DapeRun run = dape("tokenize hello.txt");
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "15496 995\n");

  for (const std::string tokenizer : {"gpt2", "byte"}) {
    run = dape("tokenize --tokenizer " + tokenizer + " " + quote(kValText) + " > ids.txt && " + quote(kDape) +
               " tokenize --decode --tokenizer " + tokenizer + " - < ids.txt");
    EXPECT_EQ(run.exit_code, 0) << run.err;
    EXPECT_EQ(run.out, read_text(kValText)) << tokenizer;
  }
  write_text(cwd() / "empty.txt", "");
  EXPECT_EQ(dape("tokenize empty.txt").out, "\n");
}

TEST_F(TokenizeCli, BadInputIsOneLineAndNonZeroExit) {
  struct Case {
    std::string args, input, expected;
    int exit_code;
  };
  const Case cases[] = {
      {"tokenize missing.txt", "", "cannot read 'missing.txt': no such file", 1},
      {"tokenize --decode ids.txt", "15496 x995", "'x995' (word 2 of 'ids.txt') is not a token id", 1},
      {"tokenize --decode ids.txt", "15496 50257",
       "token id 50257 (word 2 of 'ids.txt') is outside the vocabulary", 1},
      {"tokenize --decode --tokenizer byte ids.txt", "72 256", "outside the vocabulary [0, 256)", 1},
      {"tokenize --tokenizer bpe ids.txt", "", "--tokenizer: bpe not in {gpt2,byte}", 2},
  };
  for (const Case& c : cases) {
    write_text(cwd() / "ids.txt", c.input);
    const DapeRun run = dape(c.args);
    EXPECT_EQ(run.exit_code, c.exit_code) << c.args;
    EXPECT_NE(run.err.find(c.expected), std::string::npos) << c.args << ": " << run.err;
    EXPECT_EQ(run.err.find('\n'), run.err.size() - 1) << run.err;
    EXPECT_EQ(run.out, "");
  }
}

}  // namespace
}  // namespace dape::launcher::testing
