"""The FasterTransformer and TensorRT-LLM ensembles: generated layout, and their Python steps in a real Triton.

The engines need a GPU and the NGC image; the tokenizing and detokenizing steps around them run on CPU, so they are
loaded and called here exactly as the ensembles would call them.
"""

import json
import subprocess

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from glotta.core.tokenizer import Tokenizer
from glotta.server.triton.config_writers.engines import engine_config
from glotta.server.triton.config_writers.gpu import render, write
from glotta.server.triton.engine_targets import TARGETS, engine_sampling
from glotta.server.triton.launcher import TritonLaunchError, TritonServer, cpu_models

from .conftest import FR, REPO, free_port

STEPS = ["glotta-fr-ft-preprocessing", "glotta-fr-ft-postprocessing", "glotta-fr-trtllm-preprocessing",
         "glotta-fr-trtllm-postprocessing"]


@pytest.mark.parametrize("target", ["fastertransformer", "tensorrtllm-24.10"])
def test_committed_folders_are_what_the_generator_writes(tmp_path, target):
    for name, text in render("glotta-fr", target, f"../{FR}").items():
        assert (REPO / name / "config.pbtxt").read_text() == text
    (tmp_path / FR).mkdir()
    (tmp_path / FR / "glotta.json").write_text((REPO / FR / "glotta.json").read_text())
    for folder in write(tmp_path, "glotta-fr", FR):
        for f in folder.rglob("*"):
            if f.is_file():
                assert (REPO / f.relative_to(tmp_path)).read_text() == f.read_text()


@pytest.mark.parametrize("ensemble,engine_backend", [("glotta-fr-ft", "fastertransformer"),
                                                     ("glotta-fr-trtllm", "tensorrtllm")])
def test_ensemble_wiring_is_consistent(ensemble, engine_backend):
    """Every tensor a step reads is an ensemble input or an earlier step's output, with matching types."""
    def load(name):
        return text_format.Parse((REPO / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())

    ens = load(ensemble)
    available = {i.name: i.data_type for i in ens.input}
    for step in ens.ensemble_scheduling.step:
        cfg = load(step.model_name)
        declared_in = {i.name: i for i in cfg.input}
        for key, value in step.input_map.items():
            assert key in declared_in, f"{step.model_name} has no input {key}"
            assert available[value] == declared_in[key].data_type, f"{value} → {step.model_name}.{key}"
        required = {n for n, i in declared_in.items() if not i.optional}
        assert required <= set(step.input_map), f"{step.model_name} misses {required - set(step.input_map)}"
        declared_out = {o.name: o.data_type for o in cfg.output}
        for key, value in step.output_map.items():
            available[value] = declared_out[key]
    for out in ens.output:
        assert available[out.name] == out.data_type
    assert load(f"{ensemble}-engine").backend == engine_backend
    meta = json.loads((REPO / ensemble / "glotta.json").read_text())
    assert (REPO / ensemble / meta["tokenizer"]["file"]).is_file()


def test_only_cpu_models_are_launched_by_default():
    assert cpu_models(REPO) == ["glotta-es-tiny", "glotta-fr-tiny"]


@pytest.fixture(scope="module")
def steps_server(tmp_path_factory):
    server = TritonServer(REPO, STEPS, free_port(), free_port(), free_port(),
                          workdir=tmp_path_factory.mktemp("triton-steps")).start()
    yield grpcclient.InferenceServerClient(server.grpc_url)
    server.stop()


def _input(name, arr, dtype):
    t = grpcclient.InferInput(name, list(arr.shape), dtype)
    t.set_data_from_numpy(arr)
    return t


@pytest.mark.parametrize("kind,id_dtype", [("ft", np.uint32), ("trtllm", np.int32)])
def test_preprocessing_tokenizes_for_the_engine(steps_server, kind, id_dtype):
    tok = Tokenizer(REPO / FR / "tokenizer.json")
    inputs = [
        _input("text_input", np.array([["Le noyau Linux".encode()]], dtype=object), "BYTES"),
        _input("max_tokens", np.array([[8]], np.int32), "INT32"),
        _input("stop_words", np.array([[b"fin", b"\n\n"]], dtype=object), "BYTES"),
        _input("top_k", np.array([[5]], np.int32), "INT32"),
    ]
    r = steps_server.infer(f"glotta-fr-{kind}-preprocessing", inputs)
    ids = r.as_numpy("input_ids")
    assert ids.dtype == id_dtype and ids[0].tolist() == tok.encode("Le noyau Linux")
    assert r.as_numpy("input_lengths")[0, 0] == len(tok.encode("Le noyau Linux"))
    assert r.as_numpy("request_output_len")[0, 0] == 8
    words = r.as_numpy("stop_words_list")[0]
    expected = tok.encode("fin") + tok.encode("\n\n")
    assert words[0, : len(expected)].tolist() == expected
    assert words[1, :2].tolist() == [len(tok.encode("fin")), len(expected)]
    assert r.as_numpy("runtime_top_k")[0, 0] == 5 and r.as_numpy("temperature")[0, 0] == 1.0
    if kind == "trtllm":
        assert r.as_numpy("end_id")[0, 0] == tok.eod_id


@pytest.mark.parametrize("kind", ["ft", "trtllm"])
def test_the_same_request_means_the_same_sampling_on_every_engine(steps_server, kind):
    """FT and TRT-LLM decode greedily when runtime_top_k and runtime_top_p are both 0 (FT's DynamicDecodeLayer and
    TRT-LLM's sampling config pick top-k 1 then); the CPU engine samples the whole distribution. So a request that sets
    neither must reach the engines as top_p 1.0, and temperature 0 as top_k 1."""
    def send(**sampling):
        inputs = [_input("text_input", np.array([[b"Le"]], dtype=object), "BYTES"),
                  _input("max_tokens", np.array([[4]], np.int32), "INT32")]
        for name, (value, dtype, np_type) in sampling.items():
            inputs.append(_input(name, np.array([[value]], np_type), dtype))
        r = steps_server.infer(f"glotta-fr-{kind}-preprocessing", inputs)
        return int(r.as_numpy("runtime_top_k")[0, 0]), float(r.as_numpy("runtime_top_p")[0, 0])

    assert send() == (0, 1.0)  # nothing set: sample the whole distribution, as the CPU engine does
    assert send(temperature=(0.0, "FP32", np.float32)) == (1, 0.0)  # greedy
    assert send(top_p=(0.5, "FP32", np.float32)) == (0, 0.5)
    assert send(top_k=(7, "INT32", np.int32)) == (7, 0.0)


@pytest.mark.parametrize("kind,target_name", [("ft", "fastertransformer"), ("trtllm", "tensorrtllm-24.10")])
def test_preprocessing_takes_batched_requests_and_draws_a_seed_per_row(steps_server, kind, target_name):
    """The ensembles declare max_batch_size 64: a request of 3 rows that leaves the optional inputs out gets every
    engine tensor with 3 rows (not [1, 1]); without a seed each row gets its own, new on every request — a fixed seed
    would give every sampled request with the same prompt the same text, which the CPU engine never does."""
    texts = np.array([[b"Le noyau"], [b"La commande"], [b"Un paquet"]], dtype=object)
    base = [_input("text_input", texts, "BYTES"), _input("max_tokens", np.array([[4]] * 3, np.int32), "INT32")]
    seed = TARGETS[target_name].names["seed"]

    def send(*extra):
        r = steps_server.infer(f"glotta-fr-{kind}-preprocessing", [*base, *extra])
        for _, name, _, _ in engine_sampling(target_name):
            assert r.as_numpy(name).shape == (3, 1), name
        assert r.as_numpy("input_ids").shape[0] == 3 and r.as_numpy("request_output_len").shape == (3, 1)
        return r.as_numpy(seed)[:, 0].tolist()

    first, second = send(), send()
    assert len(set(first)) == 3 and not set(first) & set(second)
    given = _input("seed", np.array([[7], [8], [2**64 - 1]], np.uint64), "UINT64")
    assert send(given) == [7, 8, 2**64 - 1]
    assert send(_input("top_k", np.array([[5]] * 3, np.int32), "INT32"))  # given on every row: still 3 rows


def test_postprocessing_detokenizes_and_reports_eod(steps_server):
    tok = Tokenizer(REPO / FR / "tokenizer.json")
    prompt, gen = tok.encode("Le noyau"), tok.encode(" Linux est libre.")
    full = np.array([[prompt + gen + [tok.eod_id]]], np.uint32)  # FT: prompt + generation, [batch, beam, seq]
    r = steps_server.infer("glotta-fr-ft-postprocessing", [
        _input("output_ids", full, "UINT32"),
        _input("sequence_length", np.array([[full.shape[2]]], np.uint32), "UINT32"),
        _input("input_lengths", np.array([[len(prompt)]], np.uint32), "UINT32"),
    ])
    assert r.as_numpy("text_output")[0, 0].decode() == " Linux est libre."
    assert r.as_numpy("output_ids")[0].tolist() == gen
    assert r.as_numpy("finish_reason")[0, 0] == b"eod"
    only_gen = np.array([[gen]], np.int32)  # TRT-LLM with exclude_input_in_output

    def trtllm(asked: int):
        return steps_server.infer("glotta-fr-trtllm-postprocessing", [
            _input("output_ids", only_gen, "INT32"),
            _input("sequence_length", np.array([[len(gen)]], np.int32), "INT32"),
            _input("request_output_len", np.array([[asked]], np.int32), "INT32"),
        ])

    r = trtllm(len(gen))
    assert r.as_numpy("text_output")[0, 0].decode() == " Linux est libre."
    assert r.as_numpy("finish_reason")[0, 0] == b"length"
    # TRT-LLM does not return the end token: fewer tokens than asked for means it stopped
    assert trtllm(len(gen) + 10).as_numpy("finish_reason")[0, 0] == b"stop"


def _config(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("target_name", list(TARGETS))
def test_engine_configs_follow_the_upstream_rules(target_name):
    """fastertransformer_backend src/libfastertransformer.cc: "Instance Group: only KIND_CPU supports!" and "Number
    of visible GPUs must be <= instance count * TP * PP"; its all_models/gpt/fastertransformer/config.pbtxt and
    tensorrtllm_backend v0.14.0 all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt reshape every per-request
    scalar to [ ] and declare input_ids ragged (FT with the input_ids_item_shape batch input)."""
    t = TARGETS[target_name]
    cfg = _config(engine_config("m-engine", target_name))
    assert [g.kind for g in cfg.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    inputs = {i.name: i for i in cfg.input}
    assert inputs["input_ids"].allow_ragged_batch and not inputs["input_ids"].HasField("reshape")
    for name in ("input_lengths", *(dst for _, dst, _, _ in engine_sampling(target_name)), *t.extra):
        assert list(inputs[name].dims) == [1] and inputs[name].HasField("reshape"), name
        assert list(inputs[name].reshape.shape) == [], name
    assert inputs[t.names["seed"]].data_type == model_config_pb2.TYPE_UINT64
    if t.backend == "fastertransformer":
        assert [(b.kind, list(b.target_name), list(b.source_input)) for b in cfg.batch_input] == \
            [(model_config_pb2.BatchInput.BATCH_ITEM_SHAPE, ["input_ids_item_shape"], ["input_ids"])]
        assert not any(p == "model_checkpoint_path" for p in cfg.parameters)
        eight = _config(engine_config("m", target_name, {"tensor_para_size": "2"}, gpus=8))
        assert eight.instance_group[0].count * 2 >= 8  # instance count × TP × PP ≥ visible GPUs
        with pytest.raises(ValueError, match="not a multiple"):
            engine_config("m", target_name, {"tensor_para_size": "3"}, gpus=8)
    else:
        # relative to the repository, from which tritonserver runs: the same config on bare metal and in a pod
        assert cfg.parameters["gpt_model_path"].string_value == "m-engine/1"
        path = _config(engine_config("m-engine", target_name, engine_root="/srv/repo/"))
        assert path.parameters["gpt_model_path"].string_value == "/srv/repo/m-engine/1"
        assert cfg.dynamic_batching.preferred_batch_size == [cfg.max_batch_size]  # as upstream's config


def test_seed_tensor_name_per_trtllm_release():
    """tensorrtllm_backend v0.14.0 (NGC 24.10) reads `random_seed`; the current backend reads `seed`."""
    assert TARGETS["tensorrtllm-24.10"].names["seed"] == "random_seed"
    assert TARGETS["tensorrtllm"].names["seed"] == "seed"
    assert "random_seed" in (REPO / "glotta-fr-trtllm-engine" / "config.pbtxt").read_text()  # the image we ship for
    assert '"seed"' in render("x", "tensorrtllm", "../t")["x-trtllm-engine"]
    reuse = 'key: "enable_kv_cache_reuse"\n  value: { string_value: "true" }'
    assert reuse in render("x", "tensorrtllm-24.10", "../t")["x-trtllm-engine"]  # prefix reuse on the GPU too


def test_every_ensemble_and_engine_has_a_version_folder_in_git():
    """Triton refuses a model without a version ("at least one version must be available"); git keeps no empty
    folder, so upstream commits ensemble/1/.tmp — and so do we."""
    tracked = subprocess.run(["git", "ls-files", "model_repository"], cwd=REPO.parent, capture_output=True,
                             text=True).stdout.split()
    for cfg in REPO.glob("*/config.pbtxt"):
        assert any(f.startswith(f"model_repository/{cfg.parent.name}/1/") for f in tracked), cfg.parent.name


def test_a_tensor_parallel_trtllm_engine_starts_one_rank_per_gpu(tmp_path):
    """tensorrtllm_backend v0.14.0 scripts/launch_triton_server.py: `mpirun --allow-run-as-root -n 1 tritonserver ...
    : -n 1 tritonserver ...`, one rank per GPU; ranks other than 0 load only the TensorRT-LLM model, each rank with
    its own Python-backend shared-memory prefix."""
    repo = tmp_path / "repo"
    (repo / "x-engine" / "1").mkdir(parents=True)
    (repo / "x-engine" / "config.pbtxt").write_text(engine_config("x-engine", "tensorrtllm-24.10"))
    (repo / "x" / "1").mkdir(parents=True)
    (repo / "x" / "config.pbtxt").write_text('name: "x"\nplatform: "ensemble"\n')
    server = TritonServer(repo, ["x", "x-engine"], 8000, 8001, 8002, workdir=tmp_path / "w")
    with pytest.raises(TritonLaunchError, match=r"no TensorRT-LLM engine at .*x-engine/1 .*gpt_model_path"):
        server.command()  # not built yet: said, instead of a silent single rank and an engine that cannot load
    (repo / "x-engine" / "1" / "config.json").write_text(json.dumps({"pretrained_config": {"mapping": {}}}))
    assert "mpirun" not in server.command()[0]  # TP 1: one plain tritonserver
    mapping = {"world_size": 2, "tp_size": 2, "pp_size": 1}
    (repo / "x-engine" / "1" / "config.json").write_text(json.dumps({"pretrained_config": {"mapping": mapping}}))
    cmd, _ = server.command()
    assert cmd[:2] == ["mpirun", "--allow-run-as-root"]
    ranks = " ".join(cmd[2:]).split(" : ")
    assert len(ranks) == 2 and all(r.startswith("-n 1 ") and "tritonserver" in r for r in ranks)
    assert "--load-model=x " in ranks[0] + " " and "--load-model=x-engine" in ranks[0]
    assert "--load-model=x-engine" in ranks[1] and "--load-model=x " not in ranks[1] + " "
    prefix = server.shm_prefix  # this launch's, so that its regions can be removed after any stop
    assert f"shm-region-prefix-name={prefix}0_" in ranks[0] and f"shm-region-prefix-name={prefix}1_" in ranks[1]
    assert sum("shm-region-prefix-name" in a for a in cmd) == 2  # one per rank, none left from the one-rank form
