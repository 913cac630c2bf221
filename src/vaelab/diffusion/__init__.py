"""The DDPM of the annex: config, UNet, noise schedule (arithmetic only), the sampling loop, training, figure 4."""
