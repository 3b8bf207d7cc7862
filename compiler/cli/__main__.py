"""``python -m compiler.cli``: the same as the ``chipfit`` command."""

import sys

from compiler.cli.main import main

sys.exit(main())
