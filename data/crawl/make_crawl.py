"""Regenerate the labelled crawl in data/crawl/ from the training plays.

    python data/crawl/make_crawl.py [--seed 0]

Writes crawl.jsonl (`minillm.data.cleaning.build_crawl(CrawlConfig(seed))`, one page per line)
and manifest.json (the config, counts per page kind and span label, copies per repeated
passage, the SHA-256 of the file). Pure Python with a seeded `random.Random`: a rerun gives the
same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from minillm.data.cleaning import CrawlConfig, build_crawl, write_crawl
from minillm.io import atomic_write_json

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()
    config = CrawlConfig(seed=args.seed)
    pages = build_crawl(config)
    out = Path(args.out)
    path = out / "crawl.jsonl"
    write_crawl(pages, path)
    manifest = {
        "config": asdict(config),
        "pages": len(pages),
        "characters": sum(len(p.text) for p in pages),
        "bytes": path.stat().st_size,
        "kinds": dict(sorted(Counter(p.kind for p in pages).items())),
        "languages": dict(sorted(Counter(p.lang or "none" for p in pages).items())),
        "domains": dict(sorted(Counter(p.domain or "none" for p in pages).items())),
        "spans": dict(sorted(Counter(s.label for p in pages for s in p.spans).items())),
        "passage_copies": {str(p.passage): p.copies for p in pages if p.passage >= 0},
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    manifest["passage_copies"] = dict(sorted(manifest["passage_copies"].items(),
                                             key=lambda kv: int(kv[0])))
    atomic_write_json(out / "manifest.json", manifest)
    print(f"{len(pages)} pages, {manifest['bytes']:,} bytes -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
