"""How a plan is found: GreedyLayerPartition, the exact DP and its stage probes, device pools, DAGs, CP-SAT and MIP, and the table of which method honours which option."""
