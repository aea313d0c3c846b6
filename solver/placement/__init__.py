"""Where a plan runs: interconnect topologies (presets, `nvidia-smi topo -m` files), the mapper of partitions onto devices, and joint partitioning with placement."""
