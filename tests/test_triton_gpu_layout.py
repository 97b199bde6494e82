"""The FasterTransformer and TensorRT-LLM ensembles: generated layout, and their Python steps in a real Triton.

The engines need a GPU and the NGC image; the tokenizing and detokenizing steps around them run on CPU, so they are
loaded and called here exactly as the ensembles would call them.
"""

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from glotta.core.tokenizer import Tokenizer
from glotta.server.triton.config_writers.gpu import render, write
from glotta.server.triton.launcher import TritonServer, cpu_models

from .conftest import FR, REPO, free_port

STEPS = ["glotta-fr-ft-preprocessing", "glotta-fr-ft-postprocessing", "glotta-fr-trtllm-preprocessing",
         "glotta-fr-trtllm-postprocessing"]


@pytest.mark.parametrize("target", ["fastertransformer", "tensorrtllm"])
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
    assert (REPO / ensemble / meta["tokenizer"]).is_file()


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
    r = steps_server.infer("glotta-fr-trtllm-postprocessing", [
        _input("output_ids", only_gen, "INT32"),
        _input("sequence_length", np.array([[len(gen)]], np.int32), "INT32"),
    ])
    assert r.as_numpy("text_output")[0, 0].decode() == " Linux est libre."
    assert r.as_numpy("finish_reason")[0, 0] == b"length"
