"""A LightningCLI script as Lightning's documentation writes it
(docs: "Configure hyperparameters from the CLI"), with the demo model and
datamodule that ship inside the `lightning` package. Nothing in it knows tb:
tb reads the metrics Lightning's logger writes (TensorBoard event files by
default, metrics.csv with CSVLogger).

    python main.py fit --model.learning_rate=0.001 --trainer.max_epochs=5
"""

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.demos.boring_classes import BoringDataModule, DemoModel


class LitModel(DemoModel):
    """The demo model, logging its losses as any real model does."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self(batch).sum())


def cli_main():
    LightningCLI(LitModel, BoringDataModule)


if __name__ == "__main__":
    cli_main()
