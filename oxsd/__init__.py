"""oxsd: oxenstored (Xen 4.17) ported to Python."""

import logging as _logging

# Nothing is printed for records logged before the xenstored log is set up.
_logging.getLogger("oxsd").addHandler(_logging.NullHandler())
