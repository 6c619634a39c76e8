"""`python -m oxsd`: the daemon, as the `oxenstored` command."""
import sys

from .xenstored import main

sys.exit(main())
