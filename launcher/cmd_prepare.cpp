// `dape prepare`: the command line of data/prepare.h, its progress bar and summary.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <memory>

#include "data/prepare.h"
#include "launcher/commands.h"
#include "launcher/files.h"

namespace dape::launcher {

std::function<void(const data::PrepareProgress&)> prepare_progress_bar() {
  if (!isatty(STDERR_FILENO)) return nullptr;
  auto last = std::make_shared<std::chrono::steady_clock::time_point>();
  return [last](const data::PrepareProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    if (p.bytes_done < p.bytes_total && now - *last < std::chrono::milliseconds(100)) return;
    *last = now;
    const double done =
        p.bytes_total ? static_cast<double>(p.bytes_done) / static_cast<double>(p.bytes_total) : 1;
    char sizes[64];
    std::snprintf(sizes, sizeof sizes, "%.1f/%.1f MB  ", p.bytes_done / 1e6, p.bytes_total / 1e6);
    draw_progress_bar(done, sizes + format_count(p.docs) + " docs  " + format_count(p.tokens) + " tokens  " +
                                format_rate(p.seconds > 0 ? p.tokens / p.seconds : 0) + " tok/s");
    if (p.bytes_done >= p.bytes_total) clear_progress_bar();
  };
}

std::string prepare_summary_text(const std::string& out_dir, const data::PrepareSummary& s) {
  auto shards = [](int n) { return std::to_string(n) + (n == 1 ? " shard" : " shards"); };
  std::string text = "prepared " + out_dir + ": train " + format_count(s.train_docs) + " docs, " +
                     format_count(s.train_tokens) + " tokens (" + shards(s.train_shards) + "); val " +
                     format_count(s.val_docs) + " docs, " + format_count(s.val_tokens) + " tokens (" +
                     shards(s.val_shards) + ")\n";
  char timing[160];
  std::snprintf(timing, sizeof timing, "%.2f s, %s tokens/s, %.1f MB/s of input\n", s.seconds,
                format_rate(s.tokens_per_s).c_str(), s.seconds > 0 ? s.input_bytes / 1e6 / s.seconds : 0.0);
  text += timing;
  if (s.empty_docs_dropped) text += "dropped " + format_count(s.empty_docs_dropped) + " empty documents\n";
  if (s.nul_bytes_dropped)
    text += "removed " + format_count(s.nul_bytes_dropped) +
            " NUL bytes (the byte tokenizer's end-of-document id)\n";
  if (s.endoftext_literals)
    text +=
        "encoded " + format_count(s.endoftext_literals) + " literal <|endoftext|> strings as plain text\n";
  return text;
}

void add_prepare_command(CLI::App& app) {
  auto options = std::make_shared<data::PrepareOptions>();
  CLI::App* cmd = app.add_subcommand(
      "prepare", "tokenize text files, directories and JSONL (.jsonl, .jsonl.zst) into HDF5 token shards");
  cmd->add_option("--input", options->inputs,
                  "text file, directory (recursive) or JSONL with a \"text\" field; one file or line is one "
                  "document (repeatable)")
      ->required();
  cmd->add_option("--out", options->out_dir, "output directory: train/, val/ and dataset.json")->required();
  cmd->add_option("--tokenizer", options->tokenizer,
                  "gpt2 (end of document 50256) or byte (end of document 0)")
      ->check(CLI::IsMember({"gpt2", "byte"}))
      ->capture_default_str();
  cmd->add_option("--val-fraction", options->val_fraction,
                  "share of documents in val, by a hash of each document")
      ->capture_default_str();
  cmd->add_option("--shard-tokens", options->shard_tokens,
                  "tokens per shard at most (a longer document gets its own)")
      ->capture_default_str();
  cmd->add_option("--include", options->include,
                  "glob for files inside directories, matched against the name, or the relative path if it "
                  "has a '/' (repeatable; default all files)");
  cmd->add_option("--threads", options->threads, "tokenizer threads (0: one per core)")
      ->capture_default_str();
  cmd->footer("\nOutput format: docs/data-format.md. The same inputs give byte-identical shards.");
  cmd->callback([options] {
    const data::PrepareSummary summary = data::prepare(*options, prepare_progress_bar());
    std::fputs(prepare_summary_text(options->out_dir, summary).c_str(), stdout);
    std::fflush(stdout);
  });
}

}  // namespace dape::launcher
