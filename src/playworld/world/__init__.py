"""Genie's world model, in data-flow order: tokenizer -> latent actions -> dynamics -> World."""
