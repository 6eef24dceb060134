import sys

from energylens.cli import main

sys.exit(main())
