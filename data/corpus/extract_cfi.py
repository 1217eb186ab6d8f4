#!/usr/bin/python3
"""Extract the plain UTF-8 text of Debian's cfi-en ("Copyright Does Not Exist", English).

Usage: extract_cfi.py SOURCE OUT_DIR
  SOURCE   the package file (cfi-en_3.0-10.2_all.deb) or a directory it was extracted into
           (dpkg-deb -x cfi-en_*.deb DIR)
  OUT_DIR  receives cfi-en.train.txt and cfi-en.val.txt (together, the whole book)

HTML to text follows the rules of DATA.md section 2.3: <head>, <script>, <style>, <nav> dropped;
a newline at block elements; whitespace collapsed outside <pre>; entities decoded; three or more
newlines squeezed to two. Specific to this book: the per-page navigation links (INDEX, arrows) and
the "Design and formatting by" credit line are dropped, and no-break spaces become plain spaces.
The split cuts at the first paragraph boundary at or after 95% of the bytes.
Only the standard library is used, so the output depends on the Python version only through
html.unescape (stable since Python 3.4).
"""

import html.parser
import os
import re
import subprocess
import sys
import tempfile

HTML_DIR = "usr/share/doc/cfi-en/html"
# Reading order, as listed by the book's mainindex.htm.
PAGES = ["preface.htm"] + [f"ch{i}web.htm" for i in range(1, 18)] + ["ottoen.htm"]
BLOCK_TAGS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "pre", "br", "dt", "dd",
              "table", "blockquote"}
DROPPED_TAGS = {"head", "script", "style", "nav"}
NAV_HREFS = {"mainindex.htm", "index.html"}
BOILERPLATE = re.compile(r"^Design and formatting by ")
TRAIN_FRACTION = 0.95


class _Pre(str):
    """Text inside <pre>, kept as is."""


def _join(parts):
    out, run = [], []
    for part in parts + [_Pre("")]:
        if isinstance(part, _Pre):
            out.append(re.sub(r" *\n *", "\n", re.sub(r"[ \t]+", " ", "".join(run))))
            out.append(str(part))
            run = []
        else:
            run.append(part)
    return "".join(out)


class TextExtractor(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.dropped_depth = 0  # inside a dropped element
        self.nav_link_depth = 0  # inside a link to the index page
        self.pre_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in DROPPED_TAGS:
            self.dropped_depth += 1
        elif tag == "a" and dict(attrs).get("href", "").lower() in NAV_HREFS:
            self.nav_link_depth += 1
        elif tag == "pre":
            self.pre_depth += 1
        if tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag, attrs):
        if tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in DROPPED_TAGS:
            self.dropped_depth = max(0, self.dropped_depth - 1)
        elif tag == "a" and self.nav_link_depth:
            self.nav_link_depth -= 1
        elif tag == "pre":
            self.pre_depth = max(0, self.pre_depth - 1)
        if tag in BLOCK_TAGS and tag != "br":
            self.parts.append("\n")

    def handle_data(self, data):
        if self.dropped_depth or self.nav_link_depth:
            return
        if self.pre_depth:
            self.parts.append(_Pre(data))
        else:
            self.parts.append(re.sub(r"\s+", " ", data.replace("\u00a0", " ")))


def page_text(raw):
    parser = TextExtractor()
    parser.feed(raw)
    parser.close()
    text = _join(parser.parts)
    lines = [line for line in text.split("\n") if not BOILERPLATE.match(line)]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def extract(root):
    pages = []
    for name in PAGES:
        # The pages are ASCII with entities; latin-1 never fails and keeps any stray byte visible.
        with open(os.path.join(root, HTML_DIR, name), encoding="latin-1") as f:
            pages.append(page_text(f.read()))
    return "\n\n".join(pages) + "\n"


def split(text):
    data = text.encode("utf-8")
    cut = data.find(b"\n\n", int(len(data) * TRAIN_FRACTION))
    if cut < 0:
        sys.exit("extract_cfi.py: no paragraph boundary after 95% of the text")
    cut += 2
    return data[:cut].decode("utf-8"), data[cut:].decode("utf-8")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    source, out_dir = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        root = source
        if os.path.isfile(source):
            subprocess.run(["dpkg-deb", "-x", source, tmp], check=True)
            root = tmp
        text = extract(root)
    train, val = split(text)
    os.makedirs(out_dir, exist_ok=True)
    for name, body in [("cfi-en.train.txt", train), ("cfi-en.val.txt", val)]:
        with open(os.path.join(out_dir, name), "w", encoding="utf-8", newline="\n") as f:
            f.write(body)
        print(f"{name}: {len(body.encode('utf-8'))} bytes, {len(body)} characters")


if __name__ == "__main__":
    main()
