"""The VAEs of the report: config, networks, loss, training callbacks, stacked betas, opening a run, figures."""
