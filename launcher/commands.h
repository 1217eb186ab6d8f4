// launcher: the subcommands of `dape` kept outside main.cpp, one launcher/cmd_<name>.cpp each. Every
// add_<name>_command adds its subcommand to the CLI with its options and a callback that runs it; errors
// leave as dape::Error / dape::ConfigError and main turns them into one line and an exit code
// (launcher/launcher.h).
#pragma once

#include <functional>
#include <string>

#include "data/prepare.h"

namespace CLI {
class App;
}  // namespace CLI

namespace dape::launcher {

void add_prepare_command(CLI::App& app);     // dape prepare (launcher/cmd_prepare.cpp)
void add_corpus_command(CLI::App& app);      // dape corpus (launcher/cmd_corpus.cpp)
void add_eval_command(CLI::App& app);        // dape eval (launcher/cmd_eval.cpp)
void add_eval_merge_command(CLI::App& app);  // dape eval-merge (launcher/cmd_eval.cpp)
void add_export_command(CLI::App& app);      // dape export (launcher/cmd_export.cpp)
void add_inspect_command(CLI::App& app);     // dape inspect (launcher/cmd_inspect.cpp)
void add_visualize_command(CLI::App& app);   // dape visualize (launcher/cmd_visualize.cpp)
void add_tokenize_command(CLI::App& app);    // dape tokenize (launcher/cmd_tokenize.cpp)
void add_che_command(CLI::App& app);         // dape che sample|train|eval|table (launcher/cmd_che.cpp)
void add_bench_command(CLI::App& app);       // dape bench (launcher/cmd_bench.cpp)
void add_launch_command(CLI::App& app);      // dape launch slurm (launcher/cmd_launch.cpp)

// The progress bar of `dape prepare` and `dape corpus` on stderr, and their closing summary
// (cmd_prepare.cpp).
std::function<void(const data::PrepareProgress&)> prepare_progress_bar();
std::string prepare_summary_text(const std::string& out_dir, const data::PrepareSummary& s);

// dape tokenize [FILE|-] [--decode] [--tokenizer gpt2|byte]
//   encode: prints the ids of the whole input, as one document, separated by single spaces, then a newline.
//   --decode: reads ids separated by whitespace and writes their bytes, nothing added.
// The round trip is exact for any input with the byte tokenizer and for valid UTF-8 with gpt2 (invalid UTF-8
// is encoded as its U+FFFD replacement, docs/tokenizer.md). <|endoftext|> in the text is plain text.
struct TokenizeRequest {
  std::string input = "-";  // a file, or "-" for standard input
  bool decode = false;
  std::string tokenizer = "gpt2";
};
// What `dape tokenize` writes for these input bytes; `source` names the input in messages. Throws dape::Error
// for a word that is not an id or an id outside the vocabulary.
std::string tokenize_output(const TokenizeRequest& request, const std::string& input,
                            const std::string& source);

}  // namespace dape::launcher
