"""The layout of a prepare run's output folder — the only code that knows its paths:

    OUT/part-NNNNN.jsonl.gz  OUT/stats.json  OUT/report.html           the results
    OUT/.work/config.json                                             the settings the folder was made with
    OUT/.work/filter/NNNNN.{jsonl, exact.npy, sig.npy, bands.npy}     filter step: survivors and their dedup keys
    OUT/.work/filter/NNNNN.stats.json                                 ... its completion marker (written last)
    OUT/.work/dedup.{dup_of,kind,sim}.npy  OUT/.work/dedup.json        find-duplicates step (marker last)
    OUT/.work/write/NNNNN.stats.json                                  write step's marker
    OUT/.work/slurm/                                                  sbatch files and submit.sh
"""

from __future__ import annotations

from pathlib import Path

from glotta.core.atomic import atomic_write

from .config import PrepareConfig


class WorkFolder:
    def __init__(self, cfg: PrepareConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.work = self.out / ".work"

    def create(self) -> "WorkFolder":
        """Make the folders; refuse to mix outputs of different settings."""
        for step in ("filter", "write"):
            (self.work / step).mkdir(parents=True, exist_ok=True)
        saved = self.config_file
        if saved.exists():
            old = PrepareConfig.model_validate_json(saved.read_text())
            if old.settings_hash() != self.cfg.settings_hash():
                raise ValueError(f"{self.out} holds a run with other settings or inputs ({saved}); use another "
                                 f"--output, or delete it to start again")
        else:
            atomic_write(saved, self.cfg.model_dump_json(indent=2))
        return self

    @property
    def config_file(self) -> Path:
        return self.work / "config.json"

    def filtered(self, shard: int, kind: str = "jsonl") -> Path:
        """The filter step's files of a shard: jsonl, exact.npy, sig.npy, bands.npy, stats.json (the marker)."""
        return self.work / "filter" / f"{shard:05d}.{kind}"

    def dedup_array(self, name: str) -> Path:
        return self.work / f"dedup.{name}.npy"

    @property
    def dedup_marker(self) -> Path:
        return self.work / "dedup.json"

    def written_marker(self, shard: int) -> Path:
        return self.work / "write" / f"{shard:05d}.stats.json"

    def part(self, shard: int) -> Path:
        return self.out / f"part-{shard:05d}.jsonl.gz"

    @property
    def stats_file(self) -> Path:
        return self.out / "stats.json"

    @property
    def report_file(self) -> Path:
        return self.out / "report.html"

    @property
    def slurm(self) -> Path:
        return self.work / "slurm"
