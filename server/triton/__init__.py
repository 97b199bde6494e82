"""Triton in front of Glotta: the contract both sides speak, the launcher, config writers, in-server models."""
