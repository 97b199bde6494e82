"""Run the shard steps on this machine (a process pool), on a Ray cluster, or as Slurm job arrays.

Each task is `(step, settings JSON, shard)`: workers rebuild the configuration themselves, so the same entry point
serves a local process, a Ray task and a Slurm array element (`glotta data step`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from glotta.core.progress import rich_progress

from .config import PrepareConfig
from .steps import SHARD_STEPS, find_duplicates
from .workfolder import WorkFolder

PAUSE_AFTER = "GLOTTA_DATA_PAUSE_AFTER"  # "STEP:SHARD": stop for good after that step, for a kill at a known point


def run_step(step: str, cfg_json: str, shard: int) -> str:
    cfg = PrepareConfig.model_validate_json(cfg_json)
    result = SHARD_STEPS[step](cfg, shard)
    if os.environ.get(PAUSE_AFTER) == f"{step}:{shard}":  # the kill-and-resume test's pause point
        (WorkFolder(cfg).work / "paused").write_text(f"{step}:{shard}")
        while True:
            time.sleep(60)
    return result


def _progress() -> Progress:
    return rich_progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def local(cfg: PrepareConfig, step: str, workers: int) -> None:
    shards = range(len(cfg.inputs))
    desc = {"filter": "filter + dedup keys", "write": "drop duplicates + write"}[step]
    with _progress() as bar:
        task = bar.add_task(f"{desc} (shards)", total=len(shards))
        if workers <= 1:
            for i in shards:
                run_step(step, cfg.model_dump_json(), i)
                bar.advance(task)
            return
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_step, step, cfg.model_dump_json(), i) for i in shards]
            for f in as_completed(futures):
                f.result()
                bar.advance(task)


def ray(cfg: PrepareConfig, step: str, workers: int) -> None:
    """Ray tasks over the shards: `RAY_ADDRESS` joins an existing cluster, otherwise a local one starts."""
    import ray as ray_lib

    if not ray_lib.is_initialized():
        ray_lib.init(address=os.environ.get("RAY_ADDRESS"), num_cpus=None if os.environ.get("RAY_ADDRESS") else
                     workers, include_dashboard=False, log_to_driver=False)
    remote = ray_lib.remote(num_cpus=1)(run_step)
    pending = [remote.remote(step, cfg.model_dump_json(), i) for i in range(len(cfg.inputs))]
    with _progress() as bar:
        task = bar.add_task(f"step {step} on Ray (shards)", total=len(pending))
        while pending:
            done, pending = ray_lib.wait(pending, num_returns=1)
            ray_lib.get(done)
            bar.advance(task)


def slurm_scripts(cfg: PrepareConfig, workers: int, partition: str | None, glotta: str = "glotta") -> Path:
    """sbatch files for the four steps and `submit.sh` chaining them with afterok dependencies."""
    work = WorkFolder(cfg)
    folder = work.slurm
    folder.mkdir(parents=True, exist_ok=True)
    config = shlex.quote(str(work.config_file.resolve()))
    n = len(cfg.inputs)
    head = "#!/bin/bash\n#SBATCH --cpus-per-task=1\n#SBATCH --mem=8G\n" + (
        f"#SBATCH --partition={partition}\n" if partition else "")
    jobs = {
        "filter": f"{head}#SBATCH --job-name=glotta-prep-filter\n#SBATCH --array=0-{n - 1}%{workers}\n"
                  f"{glotta} data step --step filter --config {config} --shard $SLURM_ARRAY_TASK_ID\n",
        "dedup": f"{head}#SBATCH --job-name=glotta-prep-dedup\n{glotta} data step --step dedup --config {config}\n",
        "write": f"{head}#SBATCH --job-name=glotta-prep-write\n#SBATCH --array=0-{n - 1}%{workers}\n"
                 f"{glotta} data step --step write --config {config} --shard $SLURM_ARRAY_TASK_ID\n",
        "report": f"{head}#SBATCH --job-name=glotta-prep-report\n{glotta} data step --step report --config {config}\n",
    }
    for name, text in jobs.items():
        (folder / f"{name}.sbatch").write_text(text)
    submit = ["#!/bin/bash", "# Submits the four steps; each starts when the previous one succeeded.", "set -euo pipefail",
              f'cd {shlex.quote(str(folder.resolve()))}', "dep=''"]
    for name in jobs:
        submit.append(f"jid=$(sbatch --parsable $dep {name}.sbatch); echo \"{name}: $jid\"; dep=\"--dependency=afterok:$jid\"")
    (folder / "submit.sh").write_text("\n".join(submit) + "\n")
    (folder / "submit.sh").chmod(0o755)
    return folder


def submit_slurm(folder: Path) -> int:
    if shutil.which("sbatch") is None:
        print(f"sbatch is not on PATH: submit from a login node with `bash {folder / 'submit.sh'}`")
        return 0
    return subprocess.call(["bash", str(folder / "submit.sh")])


def run_all(cfg: PrepareConfig, executor: str, workers: int) -> None:
    """Filter → find duplicates → write on this machine or Ray (Slurm runs them as jobs instead)."""
    run = {"local": local, "ray": ray}[executor]
    run(cfg, "filter", workers)
    find_duplicates(cfg)
    run(cfg, "write", workers)
