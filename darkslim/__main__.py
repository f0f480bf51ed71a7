"""``python -m darkslim``: the same CLI as the ``darkslim`` script."""

import sys

from darkslim.cli import main

sys.exit(main())
