"""Train-step tokens/s, jaxunlearn vs HF PyTorch eager, same run (see jaxunlearn.bench.train_step)."""

from jaxunlearn.bench.train_step import main

if __name__ == "__main__":
    main()
