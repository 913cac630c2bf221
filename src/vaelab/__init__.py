"""vaelab: a lab for studying VAEs and a DDPM on MNIST and Fashion-MNIST."""

__version__ = "0.1.0"
