"""A plain PyTorch training loop that knows nothing of tb. It prints one
line per epoch, `epoch=N train_loss=X val_loss=Y`, which is all tb needs to
rank it, draw its curves and stop it early.

    python train.py --lr 0.05 --epochs 8
"""

import argparse

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    torch.manual_seed(a.seed)
    x = torch.randn(512, 16)
    y = x @ torch.randn(16, 1) + 0.1 * torch.randn(512, 1)
    train_x, train_y, val_x, val_y = x[:384], y[:384], x[384:], y[384:]
    model = torch.nn.Linear(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr)
    mse = torch.nn.functional.mse_loss
    for epoch in range(a.epochs):
        for i in range(0, len(train_x), 32):
            opt.zero_grad()
            loss = mse(model(train_x[i : i + 32]), train_y[i : i + 32])
            loss.backward()
            opt.step()
        with torch.no_grad():
            val = mse(model(val_x), val_y).item()
        print(f"epoch={epoch} train_loss={loss.item():.6f} val_loss={val:.6f}", flush=True)


if __name__ == "__main__":
    main()
