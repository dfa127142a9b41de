import sys

from fwp.cli import main

sys.exit(main())
