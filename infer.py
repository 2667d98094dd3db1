"""Segment volumes or X-rays: ``python infer.py --checkpoint RUN/best.pt --input PATH --output DIR``."""
import sys

from s2unet.cli import main

if __name__ == "__main__":
    sys.exit(main(command="infer"))
