"""Simulated hypervisor (sim dir contract, oxsd/sim/layout.py): daemon-side backend and guest tooling.

Modules:
  layout  the sim dir contract: paths, port files, atomic rewrites, link(2) allocation
  hv      daemon side: SimEventChannel, SimHypervisor (twin of the reference fake C libs);
          reached through oxsd.backend.open_backend(sim_dir)
  client  XenStore wire clients: XsClient, SocketClient, XsError
  guest   hypervisor/toolstack/guest side: Sim, Guest, Ring, RingClient, dom0_ring_client
  cli     the `oxsd-sim` command
"""
