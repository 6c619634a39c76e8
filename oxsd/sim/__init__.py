"""Simulated hypervisor (sim dir contract, spec/sim.md): daemon-side backend and guest tooling."""
