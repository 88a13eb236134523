"""Command line: ``python -m ms_optim train`` (the main job) and ``python -m ms_optim bench`` (benchmark)."""
import sys

USAGE = """usage: python -m ms_optim {train,bench} [options]

  train   train a small MLP on scikit-learn's digits with Model.train, ms_optim.Adam vs nn.Adam
  bench   step time of ms_optim vs MindSpore optimizers, as ratios to each other and to the memory bound
Run a command with --help for its options."""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("train", "bench"):
        print(USAGE)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "train":
        from ms_optim.train import main as command
    else:
        from ms_optim.bench import main as command
    return command(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
