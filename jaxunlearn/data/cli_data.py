"""Entry points for the ``data`` commands (wired into the CLI elsewhere)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from jaxunlearn.data.mllmu import load_mllmu
from jaxunlearn.data.schema import Benchmark
from jaxunlearn.data.synthetic import SynthConfig, write_synthetic


def synth_main(out_dir: str, seed: int = 0, n_profiles: int = 100, n_celebrities: int = 30,
               image_size: int = 64, overwrite: bool = False) -> Path:
    """Write the synthetic benchmark to ``out_dir`` (MLLMU-Bench layout) and print a summary.

    The benchmark is written into a temporary sibling and renamed into place when complete;
    an existing non-empty ``out_dir`` is refused unless ``overwrite`` (then replaced whole)."""
    from jaxunlearn.checkpoint.atomic import atomic_directory, refuse_existing

    refuse_existing(out_dir, overwrite)
    cfg = SynthConfig(seed=seed, n_profiles=n_profiles, n_celebrities=n_celebrities,
                      image_size=image_size)
    with atomic_directory(out_dir) as tmp:
        bench = write_synthetic(tmp, cfg)
    print(f"wrote {len(bench.profiles)} profiles + {len(bench.celebrities)} celebrities "
          f"to {out_dir}")
    return Path(out_dir)


def stats_table(bench: Benchmark) -> str:
    """A plain-text table of profile, question and split counts."""
    rows: list[tuple[str, str]] = [("fictitious profiles", str(len(bench.profiles))),
                                   ("celebrity profiles", str(len(bench.celebrities)))]
    people = [*bench.profiles, *bench.celebrities]
    for label, which in (("eval", "eval"), ("test", "test")):
        counts = Counter((q.kind, q.modality) for p in people for q in p.questions(which))
        for (kind, modality), n in sorted(counts.items()):
            rows.append((f"{label} {kind} / {modality}", str(n)))
    train = Counter(qa.modality for p in people for qa in p.train_qa)
    for modality, n in sorted(train.items()):
        rows.append((f"train QA / {modality}", str(n)))
    rows.append(("image-understanding QA", str(sum(len(p.understanding_qa) for p in people))))
    rows.append(("test images", str(sum(len(p.test_images) for p in people))))
    for name, ids in bench.splits.items():
        rows.append((f"split {name}", str(len(ids))))
    width = max(len(k) for k, _ in rows)
    lines = [f"{'item'.ljust(width)}  count", f"{'-' * width}  -----"]
    lines += [f"{k.ljust(width)}  {v.rjust(5)}" for k, v in rows]
    return "\n".join(lines)


def show_main(data_dir: str) -> str:
    """Load an MLLMU-Bench-layout directory and print its statistics table."""
    table = stats_table(load_mllmu(data_dir))
    print(table)
    return table
