"""Megatron-LM launch preparation: validation, rendered arguments, launch scripts and the plan."""

import re
import subprocess
import sys

import pytest

from glotta.training.megatron_config import ConfigError, load, validate
from glotta.training.megatron_launch import launch_script, parameters, plan, pretrain_args

SEED_GPT_ARGS = {  # the source talk's GPT_ARGS for the 1.7B French/Spanish model
    "--num-layers": "24", "--hidden-size": "2304", "--num-attention-heads": "32", "--seq-length": "2048",
    "--max-position-embeddings": "2048", "--tensor-model-parallel-size": "2", "--pipeline-model-parallel-size": "1",
    "--exit-duration-in-mins": "470", "--micro-batch-size": "8", "--global-batch-size": "512", "--lr": 1.2e-4,
    "--lr-decay-samples": "20800000", "--lr-decay-style": "cosine", "--lr-warmup-samples": "30516",
    "--min-lr": 1.2e-5, "--weight-decay": 0.1, "--clip-grad": 1.0, "--adam-beta1": 0.9, "--adam-beta2": 0.95,
    "--vocab-file": "/data/vocab.json", "--merge-file": "/data/merges.txt", "--init-method-std": 0.014,
}


def _as_dict(args: list[str]) -> dict:
    out, key = {}, None
    for a in args:
        if a.startswith("--"):
            key = a
            out[key] = True
        else:
            out[key] = a if out[key] is True else f"{out[key]} {a}"
    return out


def test_seed_preset_renders_the_seeds_arguments():
    cfg = load("meme-1.7b")
    args = _as_dict(pretrain_args(cfg, ["/data/my-oscar_text_document"], "/data/vocab.json", "/data/merges.txt",
                                  "/ckpt"))
    for flag, value in SEED_GPT_ARGS.items():
        assert flag in args, flag
        if isinstance(value, float):
            assert float(args[flag]) == pytest.approx(value), flag
        else:
            assert args[flag] == value, flag
    assert args["--fp16"] is True and args["--save"] == args["--load"] == "/ckpt"
    assert args["--tokenizer-type"] == "GPT2BPETokenizer"


def test_seed_head_size_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError) as e:
        validate(load("meme-1.7b"), nodes=2, gpus_per_node=8)
    assert "head size 2304/32 = 72" in str(e.value) and "24 heads (head size 96)" in str(e.value)
    assert validate(load("meme-1.7b"), 2, 8, allow_any_head_size=True) == 8
    assert validate(load("meme-1.7b", {"num_attention_heads": 24}), 2, 8) == 8


@pytest.mark.parametrize("overrides,nodes,gpus,message", [
    ({"num_attention_heads": 24, "tensor_parallel": 5}, 1, 10, "24 heads are not divisible by tensor parallel 5"),
    ({"num_attention_heads": 25}, 1, 8, "hidden size 2304 is not divisible by 25 heads"),
    ({"num_attention_heads": 24, "pipeline_parallel": 5}, 2, 10, "24 layers are not divisible by pipeline parallel 5"),
    ({"num_attention_heads": 24}, 1, 3, "world size 3 (1 nodes × 3 GPUs) is not a multiple of TP×PP = 2"),
    ({"num_attention_heads": 24, "global_batch_size": 500}, 2, 8,
     "global batch 500 is not divisible by micro batch × data parallel = 8 × 8"),
])
def test_validation_errors(overrides, nodes, gpus, message):
    with pytest.raises(ConfigError) as e:
        validate(load("meme-1.7b", overrides), nodes, gpus)
    assert message in str(e.value)


def test_plan_numbers():
    cfg = load("meme-1.7b", {"num_attention_heads": 24})
    n = parameters(cfg)
    assert n == 24 * (12 * 2304**2 + 13 * 2304) + 50432 * 2304 + 2048 * 2304 + 2 * 2304
    assert cfg.padded_vocab() == 50432  # 50,200 padded to a multiple of 128 × TP 2
    two, sixteen = plan(cfg, 2, 8, 8), plan(cfg, 16, 8, 64)
    assert two.tokens_per_step == 512 * 2048
    assert two.params_per_gpu == n // 2 and two.optimizer_gb == pytest.approx(n // 2 * 12 / 1024**3)
    assert two.days == pytest.approx(8 * sixteen.days)
    assert two.days * 2 == pytest.approx(6 * n * 20_800_000 * 2048 / (8 * 125e12 * 0.2) / 86400)
    assert two.total_gb < 32  # fits a V100 32 GB with full recomputation, as trained in the talk


def test_launch_scripts_are_valid_bash(tmp_path):
    cfg = load("meme-1.7b", {"num_attention_heads": 24})
    args = pretrain_args(cfg, ["/data/a_text_document"], "/v.json", "/m.txt", "/ckpt")
    one = launch_script(cfg, args, "/opt/Megatron-LM", 1, 8, slurm=False)
    assert "torchrun --standalone --nnodes 1 --nproc-per-node 8 /opt/Megatron-LM/pretrain_gpt.py" in one
    many = launch_script(cfg, args, "/opt/Megatron-LM", 16, 8, slurm=True)
    assert "#SBATCH --nodes=16" in many and "srun torchrun" in many and "--rdzv-backend c10d" in many
    for name, text in (("one.sh", one), ("many.sh", many)):
        (tmp_path / name).write_text(text)
        assert subprocess.run(["bash", "-n", str(tmp_path / name)]).returncode == 0
    with pytest.raises(ValueError, match="--slurm"):
        launch_script(cfg, args, "/opt/Megatron-LM", 2, 8, slurm=False)


def test_cli_plan_and_yaml_config(tmp_path):
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "train", "plan", "meme-1.7b"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "head size" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "my.yaml").write_text("preset: meme-1.7b\nnum_attention_heads: 24\nname: my-1.7b\n")
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "train", "megatron", str(tmp_path / "my.yaml"),
                        "--nodes", "2", "--slurm", "--data-path", "/d/x_text_document", "--vocab-file", "/v",
                        "--merge-file", "/m", "--save", "/ckpt", "--output", str(tmp_path / "run.sh")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "my-1.7b" in r.stdout and "8-GPU node-days" in r.stdout
    assert "--num-attention-heads 24" in (tmp_path / "run.sh").read_text()
    (tmp_path / "bad.yaml").write_text("preset: meme-1.7b\nnum_layerz: 3\n")
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "train", "plan", str(tmp_path / "bad.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "num_layerz" in r.stderr


def test_slurm_time_limit_and_exit_duration_agree(tmp_path):
    """Megatron must stop and save (--exit-duration-in-mins) before Slurm kills the job (#SBATCH --time)."""
    (tmp_path / "my.yaml").write_text("preset: meme-1.7b\nnum_attention_heads: 24\n")  # exit_duration_in_mins 470

    def script(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "glotta.cli", "train", "megatron", str(tmp_path / "my.yaml"),
                               "--nodes", "2", "--slurm", "--data-path", "/d/x_text_document", "--vocab-file", "/v",
                               "--merge-file", "/m", "--save", "/ckpt", "--output", str(tmp_path / "run.sh"), *extra],
                              capture_output=True, text=True, timeout=60)

    def limits() -> tuple[int, int]:
        text = (tmp_path / "run.sh").read_text()
        h, m, _ = re.search(r"#SBATCH --time=(\d+):(\d+):(\d+)", text).groups()
        return int(h) * 60 + int(m), int(re.search(r"--exit-duration-in-mins (\d+)", text).group(1))

    assert script().returncode == 0 and limits() == (480, 470)  # the configuration's 470 min decides the limit
    assert script("--hours", "12").returncode == 0 and limits() == (720, 470)
    r = script("--hours", "4")
    assert r.returncode == 2 and "does not fit a 4 h Slurm limit" in r.stderr and "--hours 8" in r.stderr
    (tmp_path / "my.yaml").write_text("preset: meme-1.7b\nnum_attention_heads: 24\nexit_duration_in_mins: null\n")
    assert script("--hours", "2").returncode == 0 and limits() == (120, 110)  # the limit decides the exit
