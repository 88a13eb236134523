"""Command line: ``ms-optim train`` (the main job) and ``ms-optim bench`` (benchmark); ``python -m ms_optim``
runs the same."""
import sys

USAGE = """usage: ms-optim {train,bench} [options]   (or: python -m ms_optim {train,bench} [options])

  train   train a character-level transformer LM on the Python standard library's sources with every optimizer:
          progress bars, then validation loss, tokens/s, optimizer-step time, state bytes; train.csv, train.png
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
