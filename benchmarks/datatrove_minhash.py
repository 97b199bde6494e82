"""datatrove's stock MinHash pipeline (signatures → buckets → clusters → filter), as in its
examples/minhash_deduplication.py with the default MinhashConfig. Runs in its own virtual environment (datatrove
needs numpy ≥ 2, the serving environment numpy < 2); `data_prep.py` calls it and reads the kept ids.

    python datatrove_minhash.py INPUT_DIR WORK_DIR --workers 1
"""

import argparse
import json
import time

from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers.jsonl import JsonlWriter
from datatrove.utils.typeshelper import Languages

ap = argparse.ArgumentParser()
ap.add_argument("input")
ap.add_argument("work")
ap.add_argument("--workers", type=int, default=1)
ap.add_argument("--tasks", type=int, default=8)
a = ap.parse_args()
config = MinhashConfig()  # word 5-grams, 14 buckets × 8 hashes, 64-bit xxhash
w = a.work
common = dict(workers=a.workers, skip_completed=False)
stages = [
    LocalPipelineExecutor(pipeline=[JsonlReader(a.input), MinhashDedupSignature(f"{w}/signatures", config=config,
                                                                                language=Languages.french)],
                          tasks=a.tasks, logging_dir=f"{w}/logs/1", **common),
    LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(f"{w}/signatures", f"{w}/buckets", config=config)],
                          tasks=config.num_buckets, logging_dir=f"{w}/logs/2", **common),
    LocalPipelineExecutor(pipeline=[MinhashDedupCluster(f"{w}/buckets", f"{w}/remove_ids", config=config)], tasks=1,
                          logging_dir=f"{w}/logs/3", **common),
    LocalPipelineExecutor(pipeline=[JsonlReader(a.input), MinhashDedupFilter(f"{w}/remove_ids"),
                                    JsonlWriter(f"{w}/output")], tasks=a.tasks, logging_dir=f"{w}/logs/4",
                          **common),
]
start = time.perf_counter()
for s in stages:
    s.run()
print(json.dumps({"seconds": time.perf_counter() - start, "output": f"{w}/output"}))
