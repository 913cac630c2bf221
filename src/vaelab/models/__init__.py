"""Networks: pure nn.Modules, no training or schedule logic."""
