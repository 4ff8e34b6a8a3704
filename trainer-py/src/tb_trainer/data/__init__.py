"""LightningDataModules. They download only in `prepare_data`."""
