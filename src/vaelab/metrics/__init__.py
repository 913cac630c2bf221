"""Measurements of trained runs: likelihood, sample quality in a reference classifier's features, latent probes."""
