"""Train-step tokens/s, jaxunlearn vs HF PyTorch eager, same run.

See jaxunlearn.bench.train_step; `jaxunlearn bench --only train` runs the same.
"""

from jaxunlearn.bench.train_step import main

if __name__ == "__main__":
    main()
