import sys

from cxr_core.cli.main import main

sys.exit(main())
