"""``python -m tfclip_plugin`` = ``tfclip-reid`` (same exit status)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
