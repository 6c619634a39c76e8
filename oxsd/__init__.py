"""oxsd: oxenstored (Xen 4.17) ported to Python."""
