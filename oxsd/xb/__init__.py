"""The Xb transport layer (port of tools/ocaml/libs/xb): ops, packets, partial packets, queues."""
