"""Greedy tokens and tokens/s of a built TensorRT-LLM engine, through TensorRT-LLM's own runtime (`ModelRunner`).

    python3 -m glotta.export.trtllm_run --engine-dir ENGINE --prompts PROMPTS.json --tokens 32 [--batches 1,8]

PROMPTS.json holds lists of token ids (tokenized by the caller, so both sides see the same ids). Prints one JSON
object: the greedy continuation of each prompt and the median tokens/s of three timed runs per batch size. Runs where
TensorRT-LLM is installed (the venv `make gpu-check` makes, or the NGC image); imports nothing else of Glotta's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine-dir", required=True)
    p.add_argument("--prompts", required=True, help="JSON list of token-id lists")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--end-id", type=int, required=True, help="the tokenizer's end-of-document id")
    p.add_argument("--batches", default="1,8")
    a = p.parse_args(argv)
    import torch
    from tensorrt_llm.runtime import ModelRunner

    prompts = json.loads(open(a.prompts).read())
    runner = ModelRunner.from_dir(engine_dir=a.engine_dir, rank=0)

    def generate(rows: list[list[int]]):
        with torch.no_grad():
            out = runner.generate([torch.tensor(r, dtype=torch.int32) for r in rows], max_new_tokens=a.tokens,
                                  end_id=a.end_id, pad_id=a.end_id, top_k=1, return_dict=True,
                                  output_sequence_lengths=True)
        torch.cuda.synchronize()
        return out

    out = generate(prompts)
    greedy = []
    for i, row in enumerate(prompts):
        length = int(out["sequence_lengths"][i][0])
        greedy.append(out["output_ids"][i][0][len(row):length].tolist())
    speed = {}
    for b in (int(x) for x in a.batches.split(",")):
        rows = (prompts * b)[:b]
        times, made = [], 0
        for _ in range(3):
            start = time.perf_counter()
            o = generate(rows)
            times.append(time.perf_counter() - start)
            made = sum(int(o["sequence_lengths"][i][0]) - len(r) for i, r in enumerate(rows))
        speed[b] = made / statistics.median(times)
    print(json.dumps({"greedy": greedy, "tokens_per_s": speed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
