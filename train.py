"""Train a model: ``python train.py --config configs/covid_ct.yaml [--set key=value ...]``."""
import sys

from s2unet.cli import main

if __name__ == "__main__":
    sys.exit(main(command="train"))
