"""Greedy decoding, jaxunlearn vs HF generate, same run (see jaxunlearn.bench.generate).

`jaxunlearn bench --only generate` runs the same.
"""

from jaxunlearn.bench.generate import main

if __name__ == "__main__":
    main()
