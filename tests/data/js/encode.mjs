// Reference GPT-2 encodings for the differential test and the benchmark of data/gpt2_tokenizer.
//
//   node encode.mjs FILE [INDEX]       encodes FILE with js-tiktoken (getEncoding("gpt2")) and gpt-tokenizer
//                                      (r50k_base); prints {"js-tiktoken": [[ids], ...], "gpt-tokenizer": [...]}
//   node encode.mjs --time FILE [REPS] encodes FILE REPS times (default 3) after one warm-up pass and prints
//                                      {"bytes": n, "js-tiktoken": MB/s, "gpt-tokenizer": MB/s}, best pass each
//
// FILE holds raw bytes. INDEX, when given, holds one decimal byte count per line and cuts FILE into documents
// that are encoded separately; without it FILE is one document. Each document is decoded with TextDecoder
// (WHATWG UTF-8: invalid sequences become U+FFFD; a leading BOM is kept), the behaviour dape copies.
// <|endoftext|> in the text is encoded as plain text by both libraries (no special tokens allowed).
import { readFileSync } from "node:fs";
import { getEncoding } from "js-tiktoken";
import { encode as gptTokenizerEncode } from "gpt-tokenizer/encoding/r50k_base";

const tiktoken = getEncoding("gpt2");
const encoders = {
  "js-tiktoken": (text) => tiktoken.encode(text, [], []),
  "gpt-tokenizer": (text) => gptTokenizerEncode(text, { disallowedSpecial: new Set() }),
};
const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

function documents(bytes, indexPath) {
  if (!indexPath) return [decoder.decode(bytes)];
  const docs = [];
  let offset = 0;
  for (const line of readFileSync(indexPath, "utf8").split("\n")) {
    if (line.trim() === "") continue;
    const length = Number(line);
    docs.push(decoder.decode(bytes.subarray(offset, offset + length)));
    offset += length;
  }
  if (offset !== bytes.length) throw new Error(`index covers ${offset} bytes, file has ${bytes.length}`);
  return docs;
}

const args = process.argv.slice(2);
if (args[0] === "--time") {
  const bytes = readFileSync(args[1]);
  const reps = Number(args[2] ?? 3);
  const text = decoder.decode(bytes);
  const result = { bytes: bytes.length };
  for (const [name, encode] of Object.entries(encoders)) {
    encode(text);
    let best = Infinity;
    for (let r = 0; r < reps; ++r) {
      const start = process.hrtime.bigint();
      encode(text);
      best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e9);
    }
    result[name] = bytes.length / 1e6 / best;
  }
  process.stdout.write(JSON.stringify(result) + "\n");
} else {
  const docs = documents(readFileSync(args[0]), args[1]);
  const parts = [];
  for (const [name, encode] of Object.entries(encoders)) {
    parts.push(JSON.stringify(name) + ":[" + docs.map((d) => "[" + encode(d).join(",") + "]").join(",") + "]");
  }
  process.stdout.write("{" + parts.join(",") + "}\n");
}
