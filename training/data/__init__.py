"""Corpus preparation before tokenization: cleaning, language filter, blacklist, quality filters, exact and MinHash-LSH
near-duplicate removal; run by `glotta data prepare` on one machine or through Ray / Slurm."""
