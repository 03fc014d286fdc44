"""``python -m yolo_transfer`` (what ``torchrun -m yolo_transfer train ...`` runs on every rank)."""

import sys

from yolo_transfer.cli import main

sys.exit(main())
