// `dape corpus`: the command line of data/corpus_builder.h.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "data/corpus_builder.h"
#include "launcher/commands.h"

namespace dape::launcher {

void add_corpus_command(CLI::App& app) {
  auto options = std::make_shared<data::CorpusOptions>();
  CLI::App* cmd = app.add_subcommand(
      "corpus", "build an offline stand-in corpus from Debian packages and prepare it (docs/data.md)");
  cmd->add_option("name", options->name,
                  "arxiv-like (TeX Live documentation sources) or books-like (Debian manuals and books)")
      ->required()
      ->check(CLI::IsMember(data::corpus_names()));
  cmd->add_option("--out", options->out_dir,
                  "output directory: text/, manifest.jsonl, rejected.jsonl, train/, val/, dataset.json")
      ->required();
  cmd->add_option("--cache", options->cache_dir,
                  "folder for the .deb files and unpacked trees (default $XDG_CACHE_HOME/dape/debian)");
  cmd->add_option("--tokenizer", options->tokenizer, "gpt2 or byte")
      ->check(CLI::IsMember({"gpt2", "byte"}))
      ->capture_default_str();
  cmd->add_option("--val-fraction", options->val_fraction,
                  "share of documents in val (default: arxiv-like 0.05, books-like 0.08)");
  cmd->add_option("--threads", options->threads, "tokenizer threads (0: one per core)")
      ->capture_default_str();
  cmd->callback([options] {
    auto log = [](const std::string& line) {
      std::fprintf(stderr, "corpus: %s\n", line.c_str());
      std::fflush(stderr);
    };
    const data::CorpusSummary s = data::build_corpus(*options, log, prepare_progress_bar());
    std::fputs(prepare_summary_text(options->out_dir, s.prepared).c_str(), stdout);
    std::fflush(stdout);
  });
}

}  // namespace dape::launcher
