"""The local trainer's samples are megatron-core's: GPTDataset (built by megatron-core's own
BlendedMegatronDatasetBuilder) and glotta's sampler give the same tokens for every sample index, for one epoch and for
several (where megatron-core shuffles the final epoch apart), on the same `.bin/.idx`, split and seed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from glotta.core.megatron.indexed import DatasetWriter, MegatronDataset
from glotta.training import local_trainer
from glotta.training.megatron_config import TrainConfig
from glotta.training.megatron_sampling import GPTSamples, split_ranges


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("ds") / "d"
    rng = np.random.default_rng(0)
    w = DatasetWriter(prefix, 1000)
    for _ in range(1000):
        w.add_document(rng.integers(1, 999, rng.integers(5, 40)))
    w.finalize()
    return prefix


class _Tokenizer:  # what GPTDatasetConfig reads of a tokenizer
    eod, pad, vocab_size = 0, -1, 1000
    unique_identifiers = {"class": "test"}


@pytest.mark.parametrize("num_samples", [40, 1000])  # one epoch; two, the last shuffled apart
def test_samples_equal_megatron_cores_gpt_dataset(dataset, tmp_path, num_samples):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
        from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    config = GPTDatasetConfig(random_seed=1234, sequence_length=32, blend=([str(dataset)], None), split="949,50,1",
                              path_to_cache=str(tmp_path / "cache"), reset_position_ids=False,
                              reset_attention_mask=False, eod_mask_loss=False, tokenizer=_Tokenizer())
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [num_samples, 10, 1], lambda: True, config).build()
    ds = MegatronDataset(dataset)
    beg, end = split_ranges(len(ds), "949,50,1")[0]
    assert (beg, end) == (int(train.indices[0]), int(train.indices[-1]) + 1)
    ours = GPTSamples(ds, np.arange(beg, end), 32, 1234, num_samples)
    assert len(ours) == len(train) >= num_samples
    for i in range(len(train)):
        theirs = train._query_document_sample_shuffle_indices(i)[0]
        assert np.array_equal(theirs, ours[i]), i


def test_the_trainer_takes_them_in_order(dataset, tmp_path, monkeypatch):
    cfg = TrainConfig(name="t", num_layers=1, hidden_size=32, num_attention_heads=2, seq_length=32, vocab_size=1000,
                      make_vocab_size_divisible_by=8, micro_batch_size=2, global_batch_size=4, lr=1e-3, min_lr=1e-4,
                      train_samples=8, eval_interval=100, save_interval=100, split="949,50,1")
    seen = []
    real = local_trainer._loss
    monkeypatch.setattr(local_trainer, "_loss", lambda model, batch: seen.append(batch.clone()) or real(model, batch))
    local_trainer.train(cfg, str(dataset), str(tmp_path / "ckpt"), seed=7, progress=False)
    ds = MegatronDataset(dataset)
    samples = GPTSamples(ds, np.arange(*split_ranges(len(ds), cfg.split)[0]), 32, 7, 8)
    assert torch.equal(torch.cat(seen), torch.from_numpy(np.stack([samples[i] for i in range(8)])))
