"""Studies: sweep specs, executors that run prepared run folders, tables and verdicts, VAE versus DDPM, the report."""
