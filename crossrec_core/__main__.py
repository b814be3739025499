import sys

from crossrec_core.cli import main

sys.exit(main())
