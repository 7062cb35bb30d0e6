import sys

from conserv_core.cli import main

sys.exit(main())
