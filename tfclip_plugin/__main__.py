"""``python -m tfclip_plugin`` = ``tfclip-reid`` (same output and exit status)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
