"""Generate the demo corpus for `make demo` (skipped when it is already there)."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from pipeline.demo import make_corpus  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="data/demo-audio")
    ap.add_argument("--speakers", type=int, default=8)
    ap.add_argument("--files", type=int, default=5, help="files per speaker and class")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    marker = out / ".corpus.json"
    params = {"speakers": args.speakers, "files": args.files, "seed": args.seed}
    if marker.exists() and json.loads(marker.read_text()) == params:
        print(f"demo corpus already in {out}")
        return 0
    files = make_corpus(out, speakers=args.speakers, files_per_speaker_and_class=args.files, seed=args.seed)
    marker.write_text(json.dumps(params))
    print(f"wrote {len(files)} files ({sum(f.seconds for f in files) / 60:.1f} min of audio) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
