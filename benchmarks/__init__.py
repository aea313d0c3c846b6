"""layerfit's benchmarks: ``python -m benchmarks [--quick]`` runs them all (see __main__)."""
