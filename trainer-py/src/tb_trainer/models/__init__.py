"""Plain `nn.Module` networks, and the LightningModule that trains them per task."""
