// Typesets TeX for the web book (minillm/course/katex.py starts this once per build).
//
//     node katex_render.js <folder of the katex package>
//
// Reads one request per line on stdin, {"tex": "\\sqrt{d}", "display": false}, and answers each
// with one line on stdout: {"html": "<span class=\"katex\">…"} or {"error": "KaTeX parse error: …"}.
"use strict";

const katex = require(process.argv[2]);
const readline = require("readline");

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const { tex, display } = JSON.parse(line);
  let answer;
  try {
    answer = { html: katex.renderToString(tex, { displayMode: display, throwOnError: true }) };
  } catch (err) {
    answer = { error: err.message };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
