"""Megatron-LM's file formats: checkpoints and their tracker, the mmap `.bin/.idx` dataset, the GPT shape."""
