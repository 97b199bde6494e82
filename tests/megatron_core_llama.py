"""Megatron-core's own GPTModel in the Llama configuration (RoPE, RMSNorm, SwiGLU, 2 query groups for 4 heads,
untied output layer, no biases), run on CPU with real tensor-parallel ranks (gloo): writes each rank's checkpoint
file as Megatron saves it (`--ckpt-format torch`) and the logits of a fixed prompt — the reference Glotta's reader
must reproduce. Run as a script (it spawns one process per rank): python megatron_core_llama.py TP OUT PORT."""

import argparse
import contextlib
import os
import sys

import torch
import torch.nn.functional as F

HIDDEN, HEADS, GROUPS, FFN, LAYERS, VOCAB, POSITIONS = 64, 4, 2, 96, 2, 128, 64
PROMPT = [(7 * i) % VOCAB for i in range(3, 13)]


def megatron_args(tp: int) -> argparse.Namespace:
    """The arguments pretrain_gpt.py would save for this model (megatron/training/arguments.py names)."""
    return argparse.Namespace(
        num_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=HEADS, group_query_attention=True,
        num_query_groups=GROUPS, ffn_hidden_size=FFN, padded_vocab_size=VOCAB, max_position_embeddings=POSITIONS,
        position_embedding_type="rope", rotary_base=10000, rotary_percent=1.0, normalization="RMSNorm",
        norm_epsilon=1e-5, swiglu=True, add_bias_linear=False, untie_embeddings_and_output_weights=True,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=1)


def _rank(rank: int, tp: int, out: str, port: int) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=tp)
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.models.gpt.gpt_model import GPTModel
    from megatron.core.tensor_parallel.mappings import gather_from_tensor_model_parallel_region
    from megatron.core.transformer.transformer_config import TransformerConfig

    parallel_state.initialize_model_parallel(tp, 1)
    # CPU only: the RoPE table goes to "the current CUDA device", and dropout forks a CUDA RNG (dropout is 0 here)
    torch.cuda.current_device = lambda: "cpu"
    tensor_parallel.get_cuda_rng_tracker().fork = contextlib.nullcontext
    torch.manual_seed(0)
    cfg = TransformerConfig(
        num_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=HEADS, num_query_groups=GROUPS,
        ffn_hidden_size=FFN, normalization="RMSNorm", gated_linear_unit=True, activation_func=F.silu,
        add_bias_linear=False, layernorm_epsilon=1e-5, init_method_std=0.2, use_cpu_initialization=True,
        tensor_model_parallel_size=tp, hidden_dropout=0.0, attention_dropout=0.0, bias_activation_fusion=False,
        masked_softmax_fusion=False, persist_layer_norm=False, bias_dropout_fusion=False, apply_rope_fusion=False)
    model = GPTModel(cfg, get_gpt_layer_local_spec(normalization="RMSNorm"), vocab_size=VOCAB,
                     max_sequence_length=POSITIONS, position_embedding_type="rope",
                     share_embeddings_and_output_weights=False, rotary_base=10000).eval()
    ids = torch.tensor([PROMPT])
    n = len(PROMPT)
    with torch.no_grad():
        logits = model(ids, torch.arange(n)[None], attention_mask=torch.triu(torch.ones(n, n), 1).bool()[None, None])
        logits = gather_from_tensor_model_parallel_region(logits)  # each rank holds a slice of the vocabulary
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
    folder = os.path.join(out, "iter_0000001", f"mp_rank_{rank:02d}")
    os.makedirs(folder, exist_ok=True)
    torch.save({"args": megatron_args(tp), "checkpoint_version": 3.0, "iteration": 1, "model": state},
               os.path.join(folder, "model_optim_rng.pt"))
    if rank == 0:
        torch.save(logits.reshape(n, VOCAB), os.path.join(out, "reference_logits.pt"))
        with open(os.path.join(out, "latest_checkpointed_iteration.txt"), "w") as f:
            f.write("1")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    tp, out, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    torch.multiprocessing.spawn(_rank, args=(tp, out, port), nprocs=tp)
