"""Gather the GPU suite's step outputs into one Markdown section (benchmarks/gpu_suite/run.sh).

    python benchmarks/gpu_suite/report.py OUT [--write-docs docs/benchmarks.md]

Writes OUT/report.md: the machine (OUT/environment.txt), the summary (exit status and seconds
per step), the flash-attention rows as a table (OUT/flash_attention.json) and every step's
output. With --write-docs, the section replaces what lies between the gpu-suite markers of that
file (a GPU run: the numbers are the machine's; a dry run never writes the docs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BEGIN, END = "<!-- gpu-suite:begin -->", "<!-- gpu-suite:end -->"
STEPS = ("cuda_tests", "flash_attention", "train_step", "moe", "quantization")


def flash_table(rows: list[dict]) -> list[str]:
    lines = ["| T | d | causal | backend | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s "
             "| peak MiB |", "|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['T']} | {r['d']} | {r['causal']} | {r['backend']} | "
                     f"{r['fwd_ms']:.2f} | {r['fwd_tflops']:.1f} | {r['ms']:.2f} | "
                     f"{r['tflops']:.1f} | {r['peak_mib']:.0f} |")
    return lines


def report(out: Path) -> str:
    env = (out / "environment.txt").read_text().strip() if (out / "environment.txt").exists() \
        else "(no environment step)"
    lines = [BEGIN, "### GPU suite results (`bash benchmarks/gpu_suite/run.sh`)", "",
             "Machine:", "", "```", env, "```", "", "Steps (exit status, seconds, last line):",
             "", "```", (out / "summary.txt").read_text().strip()
             if (out / "summary.txt").exists() else "", "```", ""]
    fa = out / "flash_attention.json"
    if fa.exists():
        lines += ["Attention (FlashAttention-2's FLOP count):", "",
                  *flash_table(json.loads(fa.read_text())), ""]
    for name in STEPS:
        path = out / f"{name}.txt"
        if path.exists():
            lines += [f"`{name}`:", "", "```", path.read_text().strip()[-6000:], "```", ""]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_docs(section: str, docs: Path) -> None:
    text = docs.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{docs} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    docs.write_text(head + section.rstrip("\n") + tail)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--write-docs", type=Path)
    a = p.parse_args(argv)
    section = report(a.out)
    (a.out / "report.md").write_text(section)
    if a.write_docs:
        write_docs(section, a.write_docs)
    print(f"wrote {a.out / 'report.md'}" + (f" and {a.write_docs}" if a.write_docs else ""))


if __name__ == "__main__":
    main()
