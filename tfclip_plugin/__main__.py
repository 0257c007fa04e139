"""``python -m tfclip_plugin`` = ``tfclip-reid``."""
from .cli import main

if __name__ == "__main__":
    main()
