import sys

from cosa.cli.main import main

sys.exit(main())
