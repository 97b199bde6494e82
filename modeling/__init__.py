"""What a model *is*, apart from serving, exporting or training it (docs/architecture.md).

- `spec`: `ModelSpec`, the one typed, versioned description of a model — the schema of a served folder's glotta.json;
- `registry` and `families/`: one module per family (gpt2, llama, qwen2), each holding everything about it — Hugging
  Face config ↔ spec, Megatron arguments ↔ spec, the weight-name maps;
- `decoder_graph`, `engine_graph`: the fused ONNX decoder every family runs on (its shape comes from the spec's traits);
- `hf_folder`, `special_tokens`, `safetensors`: Hugging Face folders taken at their word;
- `megatron_reader`, `megatron_hf`: Megatron checkpoints → canonical weights → a `transformers` model.

Server, export and training import this package; it imports only `glotta.core`.
"""
